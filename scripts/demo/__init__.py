"""The end-to-end demo: record expert episodes in the simulated PushT robot, train a policy on
the bags, serve it with the inference node on the simulated robot, evaluate it offline.

Run from the repository root after ``source scripts/env.sh``: ``python -m scripts.demo --help``
(``scripts/demo.sh`` does the set-up first).
"""
