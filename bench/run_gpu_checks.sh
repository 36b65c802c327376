#!/usr/bin/env bash
# The GPU checks in one call, for a lent GPU machine without ROS (torch preinstalled, Python
# 3.12): diffusers and importlib_metadata travel as wheels in .whl/ (not tracked), made here
# with: pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#   diffusers==0.42.1 importlib_metadata
# and carried to the device with the working tree.
# Usage: bench/run_gpu_checks.sh OUT_DIR [inference_budget_s] [node_budget_s] [node_compile]
# node_compile=1 serves the node check's fast backend compiled (sampler_compile; about a
# minute more per policy).
set -uo pipefail
out=${1:?output directory}
inference_budget=${2:-240}
node_budget=${3:-12}
node_compile=()
[ "${4:-0}" = 1 ] && node_compile=(--sampler-compile)
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=src/dp_policy:src/dp_policy_node:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# Inference latency: the paper's image network first (the targets), then the low-dim one.
# The compiled variant costs about a minute of compilation per network; it is the one the
# targets hinge on, so it runs right after the eager reference and the uncompiled graph.
timeout $((inference_budget + 60)) python3 bench/inference_latency.py --device cuda \
  --samplers ddim10,ddpm100 --configs image_unet,lowdim_unet --compile \
  --compile-configs image_unet,lowdim_unet \
  --variants eager,graph_fp16_gemm,compiled_graph_fp16_gemm,graph_fp32_native \
  --warmup 3 --case-budget-s 2 --time-budget-s "$inference_budget" \
  --out "$out/inference_latency_gpu.json" 2>&1 | tail -40
# The node's CUDA path: device selection, warm-up, worker thread, cleanup frees memory.
timeout $((2 * node_budget + 60 + ${#node_compile[@]} * 180)) python3 \
  bench/policy_node_gpu_check.py --device cuda "${node_compile[@]}" \
  --budget-s "$node_budget" --output "$out/policy_node_gpu_check.json" 2>&1 | tail -25
