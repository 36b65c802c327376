"""Sustained recording rates of dp_recorder without drops, written as JSON.

    source scripts/env.sh && python bench/recorder_throughput.py [--output PATH] [--quick]

Real processes over DDS, as on a robot: a publisher process (dp_recorder's pattern publisher:
640x480 rgb8 images and 6-joint JointState, every message numbered) and the recorder process,
controlled through its services from here. Each run publishes a fixed number of messages during
an episode; afterwards the bag is read back and every message checked. A drop is a published
message that is not in the bag, whatever lost it (DDS, the recorder's queue).

1. The stated load: camera 30 Hz + joint states 100 Hz, 20 s, without and with zstd.
2. The camera rate raised step by step (joint states stay at 100 Hz) until a run drops
   messages or the publisher cannot keep the rate: the highest camera rate without drops.

Both with Fast DDS as it comes (its shared-memory segments hold 512 KB, so a VGA image goes
over UDP on loopback in 64 KB fragments) and with FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA, the
setting ROS 2 recommends for large messages. Image pixels are noise, the worst case for zstd.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from dp_testing.domain import isolated_ros_environment, reserve_domain  # noqa: E402

_reservation = reserve_domain()
os.environ.update(isolated_ros_environment(_reservation.domain_id))

from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from dp_msgs.srv import StartEpisode, StopEpisode  # noqa: E402
from dp_recorder.testing.bags import custom_data, read_bag  # noqa: E402
from dp_recorder.testing.patterns import pattern_image, pattern_joint_state  # noqa: E402
from dp_testing.probe import GraphProbe  # noqa: E402
from dp_testing.processes import ProcessGraph  # noqa: E402

CAMERA, JOINTS = "/bench/camera/image_raw", "/bench/joint_states"
WIDTH, HEIGHT = 640, 480
JOINT_RATE = 100.0
# Publisher history of the joint states: 10 s. On this machine Fast DDS repairs some joint-state
# samples up to about 1 s late while VGA images flow (with or without the recorder), which a
# history of 100 samples (1 s) does not always cover: those losses would be DDS's, not the
# recorder's. The camera keeps a history of 100 (3 s at 30 Hz).
JOINT_DEPTH = 1000
# After the last message is published, how long the recorder may take to receive what is still
# in flight (reliable DDS repairs lost fragments late) before the episode ends.
SETTLE_S = 5.0


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "rclpy": version("ros-kilted-rclpy"),
        "rmw": os.environ.get("RMW_IMPLEMENTATION", ""),
        "rosbags": version("rosbags"),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    probe: GraphProbe,
    work: Path,
    name: str,
    camera_rate: float,
    seconds: float,
    compression: str = "none",
    check_content: bool = False,
    transport: str = "default",
) -> dict[str, Any]:
    """One episode under load; returns what was published, recorded and dropped."""
    environment = dict(os.environ)
    environment.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    if transport != "default":
        environment["FASTDDS_BUILTIN_TRANSPORTS"] = transport
    processes = ProcessGraph(work / "logs" / name, environment)
    node = f"bench_recorder_{name}"
    output_dir = work / name
    status = probe.collect(f"/{node}/status", String)
    try:
        recorder = processes.start_python_module(
            node,
            "dp_recorder",
            parameters={
                "topics": [CAMERA, JOINTS],
                "output_dir": str(output_dir),
                "compression": compression,
                "graph_poll_period": 0.1,
                "status_period": 0.2,
            },
        )
        if not recorder.wait_for_output("recorder ready", 60.0):
            raise RuntimeError(recorder.output())
        probe.call_service(
            StartEpisode, f"/{node}/start_episode", StartEpisode.Request(task="bench"), 30.0
        )
        images, joints = round(camera_rate * seconds), round(JOINT_RATE * seconds)
        publisher = processes.start_python_module(
            f"bench_publisher_{name}",
            "dp_recorder.testing.pattern_publisher",
            parameters={
                "image_topic": CAMERA,
                "image_width": WIDTH,
                "image_height": HEIGHT,
                "image_rates": [camera_rate],
                "image_counts": [images],
                "joint_topic": JOINTS,
                "joint_rates": [JOINT_RATE],
                "joint_counts": [joints],
                "joint_depth": JOINT_DEPTH,
            },
        )
        if not publisher.wait_for_output(f"{JOINTS}: 1 subscriber", 60.0):
            raise RuntimeError(publisher.output())
        cpu_before, wall_before = cpu_seconds(recorder.pid), time.monotonic()
        for topic, count in ((CAMERA, images), (JOINTS, joints)):
            if not publisher.wait_for_output(f"{topic}: published {count}", seconds * 3 + 30):
                raise RuntimeError(publisher.output())
        cpu_used = cpu_seconds(recorder.pid) - cpu_before
        wall = time.monotonic() - wall_before
        settle_s = _wait_received(status, {CAMERA: images, JOINTS: joints}, SETTLE_S)
        stopped = probe.call_service(
            StopEpisode, f"/{node}/stop_episode", StopEpisode.Request(task_success=True), 120.0
        )
        log = publisher.output()
        measured = {
            topic: float(log.split(f"{topic}: published ")[1].split(" at ")[1].split(" Hz")[0])
            for topic in (CAMERA, JOINTS)
        }
        statuses = [json.loads(m.data) for m in status.messages]
        bag = Path(stopped.bag_path)
        messages = read_bag(bag)
        recorded = {}
        for topic, message_type, count in ((CAMERA, Image, images), (JOINTS, JointState, joints)):
            indices = [t for _, t, _ in _indexed(messages.get(topic, []))]
            recorded[topic] = {
                "published": count,
                "recorded": len(indices),
                "missing": count - len(set(indices) & set(range(count))),
                # False when DDS repaired a lost fragment late: the bag is in receive order.
                "received_in_order": indices == sorted(indices),
            }
            if check_content:
                recorded[topic]["content_exact"] = all(
                    deserialize_message(raw, message_type)
                    == (
                        pattern_image(t, WIDTH, HEIGHT)
                        if message_type is Image
                        else pattern_joint_state(t)
                    )
                    for raw, t, _ in _indexed(messages.get(topic, []), raw_first=True)
                )
        bag_bytes = sum(p.stat().st_size for p in bag.iterdir())
        image_bytes = len(messages[CAMERA][0][2]) if messages.get(CAMERA) else 0
        result = {
            "name": name,
            "transport": transport,
            "camera_rate_hz": camera_rate,
            "joint_rate_hz": JOINT_RATE,
            "seconds": seconds,
            "compression": compression,
            "measured_publish_rate_hz": {"camera": measured[CAMERA], "joints": measured[JOINTS]},
            "topics": {"camera": recorded[CAMERA], "joints": recorded[JOINTS]},
            "recorder_queue_drops": int(custom_data(bag).get("dropped_messages", "0")),
            "drops": sum(r["missing"] for r in recorded.values()),
            "payload_mb_per_s": round(image_bytes * measured[CAMERA] / 1e6, 1),
            "bag_mb": round(bag_bytes / 1e6, 1),
            "recorder_cpu_percent": round(100 * cpu_used / wall, 1),
            "settle_s": round(settle_s, 2),
            "peak_writer_queue_mb": round(
                max((s.get("queued_bytes", 0) for s in statuses), default=0) / 1e6, 1
            ),
            "stop_episode_message": stopped.message,
        }
        shutil.rmtree(output_dir, ignore_errors=True)  # the bags are large; the figures stay
        return result
    finally:
        processes.stop_all()


def _wait_received(status, counts: dict[str, int], timeout: float) -> float:
    """Seconds until the recorder's status shows ``counts`` received (``timeout`` at most)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if status.messages:
            topics = json.loads(status.messages[-1].data).get("topics", {})
            if all(topics.get(t, {}).get("messages", 0) >= n for t, n in counts.items()):
                break
        time.sleep(0.05)
    return time.monotonic() - started


def _indexed(messages: list, raw_first: bool = False):
    """(raw, index, time) or (time, index, raw) of bag messages, index from header.stamp.sec."""
    for timestamp, decoded, raw in messages:
        index = decoded.header.stamp.sec
        yield (raw, index, timestamp) if raw_first else (timestamp, index, raw)


TRANSPORTS = ("default", "LARGE_DATA")
RAMP_HZ = (60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 300.0)


def ramp(probe: GraphProbe, work: Path, transport: str, seconds: float, results: list) -> dict:
    """Raise the camera rate until drops, or until the publisher cannot keep the rate."""
    highest, stopped_by = 30.0, "not reached"
    for rate in RAMP_HZ:
        name = f"ramp_{transport}_{int(rate)}"
        result = run(probe, work, name, rate, seconds, transport=transport)
        results.append(result)
        print(json.dumps(result), flush=True)
        measured = result["measured_publish_rate_hz"]["camera"]
        if result["drops"]:
            stopped_by = f"{result['drops']} drops at {rate:g} Hz"
            break
        if measured < 0.95 * rate:
            highest = max(highest, measured)
            stopped_by = f"the publisher reached only {measured:.1f} Hz of {rate:g} Hz"
            break
        highest = rate
    return {
        "transport": transport,
        "highest_camera_rate_without_drops_hz": highest,
        "stopped_by": stopped_by,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "recorder_throughput.json"
    )
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    arguments = parser.parse_args()
    seconds, ramp_seconds = (5.0, 4.0) if arguments.quick else (20.0, 10.0)
    work = Path(tempfile.mkdtemp(prefix="dp_recorder_bench_"))
    probe = GraphProbe("bench_probe")
    results: list[dict[str, Any]] = []
    ramps = []
    try:
        for transport in TRANSPORTS:
            for compression in ("none", "zstd"):
                name = f"stated_{transport}_{compression}"
                result = run(probe, work, name, 30.0, seconds, compression, True, transport)
                results.append(result)
                print(json.dumps(result), flush=True)
            ramps.append(ramp(probe, work, transport, ramp_seconds, results))
            if any(r["drops"] for r in results if r["name"].startswith(f"stated_{transport}")):
                ramps[-1]["highest_camera_rate_without_drops_hz"] = None
    finally:
        probe.close()
        shutil.rmtree(work, ignore_errors=True)
        _reservation.release()
    stated = [r for r in results if r["name"].startswith("stated_")]
    report = {
        "benchmark": "dp_recorder throughput",
        "command": "python bench/recorder_throughput.py" + " --quick" * arguments.quick,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "setup": (
            "publisher and recorder as separate processes (python -m ...), Fast DDS on "
            "loopback, reliable QoS, publisher history 100 images and 1000 joint states, "
            "recorder history 1000 per topic (its default); images 640x480 rgb8 "
            "(921,600 bytes of noise pixels), JointState with 6 joints at 100 Hz; MCAP storage, "
            "flush (and fsync) every 1 s; drops = published messages missing from the bag, "
            "whatever lost them; every message of the stated-load runs compared with what was "
            "published"
        ),
        "stated_load": {
            "camera_hz": 30.0,
            "joints_hz": JOINT_RATE,
            "seconds": seconds,
            "drops": {f"{r['transport']}/{r['compression']}": r["drops"] for r in stated},
            "content_exact": all(
                t.get("content_exact", False) for r in stated for t in r["topics"].values()
            ),
        },
        "camera_ramp": ramps,
        "runs": results,
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {arguments.output}")
    # The PNG is a by-product, drawn in a process of its own: a plotting problem (say, no
    # matplotlib on a GPU box) is reported there and costs the benchmark nothing.
    subprocess.run(
        [sys.executable, str(Path(__file__).with_name("plots.py")), str(arguments.output)]
    )
    return 0 if all(r["drops"] == 0 for r in stated) else 1


if __name__ == "__main__":
    sys.exit(main())
