"""The recorder under hostile input, as a real process over DDS (seeded, about a minute).

While episodes are being recorded, the test process publishes on the recorded topics valid
messages (each with a sequence number in ``header.frame_id``: ``valid:<n>``) interleaved with
malformed ones: images of the wrong geometry, short, empty and huge; joint states with
mismatched arrays, duplicate names, NaN, inf and 1e300; stamps with ``nanosec`` >= 1e9, zero,
negative and backwards; kilobyte-long frame ids; bursts; and bytes that are no message of the
topic's type at all (random bytes, cut CDR, CDR with a tail, a foreign encapsulation). Then a
second publisher appears on both recorded topics with the other topic's type, and finally the
episode services get a storm of overlapping, out-of-order start and stop calls.

Afterwards every bag must be readable with ``rosbags`` (metadata counts consistent, every
message decodable with the bag's own types), every valid message published during an episode
must be in its bag exactly once, every malformed but decodable message too (the recorder keeps
what was on the wire), undecodable bytes must be refused and counted, and the recorder must still
answer and say what it refused and noted. Every problem found is listed, not just the first.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from dp_msgs.msg import EpisodeEvent
from dp_msgs.srv import StartEpisode, StopEpisode
from dp_recorder.message_definitions import MessageDefinitions
from dp_recorder.testing.bags import custom_data, read_bag

pytestmark = pytest.mark.ros

SEED = 16
_DEFINITIONS = MessageDefinitions()


def frame_ids(messages: list) -> list[str]:
    return [message.header.frame_id.split(":x")[0] for _, message, _ in messages]


def decoded_frame_id(raw: bytes, msgtype: str) -> str | None:
    """The frame id of ``raw`` as rosbags (the bag's reader) decodes it; None: undecodable."""
    try:
        message = _DEFINITIONS.typestore(msgtype).deserialize_cdr(raw, msgtype)
    except Exception:
        return None
    return message.header.frame_id.split(":x")[0]


def valid_image(seq: int) -> Image:
    message = Image(height=12, width=16, encoding="rgb8", step=48)
    message.header.frame_id = f"valid:{seq}"
    message.header.stamp.sec, message.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
    message.data = bytes((seq + i) % 256 for i in range(12 * 48))
    return message


def valid_joints(seq: int) -> JointState:
    message = JointState(name=["j1", "j2", "j3"])
    message.header.frame_id = f"valid:{seq}"
    message.header.stamp.sec, message.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
    message.position = [seq * 0.001, 0.5, -0.5]
    message.velocity = [0.0, 0.1, 0.2]
    return message


def malformed_images(rng: random.Random, start: int) -> list[Image]:
    """Images that are valid CDR but wrong as images; frame ids ``bad:<n>``."""
    cases: list[Image] = []

    def image(**fields: Any) -> Image:
        message = Image(**fields)
        message.header.frame_id = f"bad:{start + len(cases)}"
        message.header.stamp.sec = int(time.time())
        cases.append(message)
        return message

    image(height=48, width=64, encoding="rgb8", step=192, data=bytes(16 * 12 * 3))  # too small
    image(height=12, width=16, encoding="rgb8", step=48, data=bytes(100))  # short data
    image(height=0, width=0, encoding="", step=0, data=b"")  # empty
    image(height=12, width=16, encoding="yuv_of_mars", step=48, data=bytes(12 * 48))
    image(height=12, width=16, encoding="rgb8", step=10, data=bytes(120))  # step < width*3
    image(height=100000, width=100000, encoding="rgb8", step=300000, data=bytes(10))
    image(height=1024, width=4096, encoding="rgb8", step=4096 * 3, data=rng.randbytes(12 << 20))
    stamped = image(height=12, width=16, encoding="rgb8", step=48, data=bytes(12 * 48))
    stamped.header.stamp.nanosec = 1_500_000_000  # must be below 1e9
    zero = image(height=12, width=16, encoding="rgb8", step=48, data=bytes(12 * 48))
    zero.header.stamp.sec = 0
    backwards = image(height=12, width=16, encoding="rgb8", step=48, data=bytes(12 * 48))
    backwards.header.stamp.sec = -5
    future = image(height=12, width=16, encoding="rgb8", step=48, data=bytes(12 * 48))
    future.header.stamp.sec = int(time.time()) + 3600
    long_id = image(height=12, width=16, encoding="rgb8", step=48, data=bytes(12 * 48))
    long_id.header.frame_id += ":" + "x" * 100_000
    rng.shuffle(cases)
    return cases


def malformed_joint_states(rng: random.Random, start: int) -> list[JointState]:
    cases: list[JointState] = []

    def joints(**fields: Any) -> JointState:
        message = JointState(**fields)
        message.header.frame_id = f"bad:{start + len(cases)}"
        message.header.stamp.sec = int(time.time())
        cases.append(message)
        return message

    nan, inf = float("nan"), float("inf")
    joints(name=["j1", "j2", "j3"], position=[0.1, 0.2], velocity=[1.0] * 5)
    joints(name=["j1", "j2", "j3"], position=[nan, inf, -inf])
    joints(name=["j1", "j2", "j3"], position=[1e300, -1e300, 1e30])
    joints(name=["j1", "j2", "j1"], position=[0.0, 0.0, nan])
    joints(name=[], position=[1.0, 2.0])
    joints(name=["j1", "j2", "j3"], position=[0.0, 0.0, 0.0], effort=[inf])
    stamped = joints(name=["j1", "j2", "j3"], position=[0.0, 0.0, 0.0])
    stamped.header.stamp.nanosec = 4_294_967_295
    zero = joints(name=["j1", "j2", "j3"], position=[0.0, 0.0, 0.0])
    zero.header.stamp.sec = 0
    backwards = joints(name=["j1", "j2", "j3"], position=[0.0, 0.0, 0.0])
    backwards.header.stamp.sec = int(time.time()) - 3600
    rng.shuffle(cases)
    return cases


def garbage(rng: random.Random, valid_cdr: bytes) -> list[bytes]:
    """Bytes that no reader can take for the topic's type."""
    return [
        rng.randbytes(rng.randint(1, 200)),
        b"\x00\x01\x00\x00" + rng.randbytes(rng.randint(8, 64)),  # CDR header, random body
        valid_cdr[: len(valid_cdr) // 2],  # cut
        valid_cdr + rng.randbytes(64),  # a tail after the message
        b"\x00\x07\x00\x00" + valid_cdr[4:],  # an encapsulation nobody reads
        b"\x00\x01\x00\x00",  # nothing but the CDR header
    ]


class Streams:
    """The test's publishers on the recorded topics, and what it published on them."""

    def __init__(self, probe, camera: str, joints: str) -> None:
        qos = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {
            camera: probe.node.create_publisher(Image, camera, qos),
            joints: probe.node.create_publisher(JointState, joints, qos),
        }
        self.types = {camera: "sensor_msgs/msg/Image", joints: "sensor_msgs/msg/JointState"}
        self.camera, self.joints = camera, joints
        self.seq = 0
        self.lock = threading.Lock()
        # Per topic: (frame id, publish time in ns) of every message that a reader can decode.
        self.sent: dict[str, list[tuple[str, int]]] = {camera: [], joints: []}
        self.garbage: Counter[str] = Counter()

    def add_joint_states(self, probe, topic: str) -> None:
        """A further JointState publisher (one that appears late)."""
        qos = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
        with self.lock:
            self.publishers[topic] = probe.node.create_publisher(JointState, topic, qos)
            self.types[topic] = "sensor_msgs/msg/JointState"
            self.sent[topic] = []

    def valid(self, topic: str) -> str:
        with self.lock:
            seq, self.seq = self.seq, self.seq + 1
            message = valid_image(seq) if topic == self.camera else valid_joints(seq)
            self._publish(topic, message)
        return message.header.frame_id

    def malformed(self, topic: str, message: Any) -> None:
        with self.lock:
            self._publish(topic, message)

    def raw(self, topic: str, data: bytes) -> None:
        with self.lock:
            published_at = time.time_ns()
            self.publishers[topic].publish(data)
            frame_id = decoded_frame_id(data, self.types[topic])
            if frame_id is None:
                self.garbage[topic] += 1
            else:
                self.sent[topic].append((frame_id, published_at))

    def _publish(self, topic: str, message: Any) -> None:
        published_at = time.time_ns()
        self.publishers[topic].publish(message)
        self.sent[topic].append((message.header.frame_id.split(":x")[0], published_at))

    def acknowledged(self, timeout_s: float = 20.0) -> bool:
        """Wait until every subscriber has every message (the recorder has it, not yet taken)."""
        return all(
            publisher.wait_for_all_acked(Duration(seconds=timeout_s))
            for publisher in self.publishers.values()
        )

    def mark(self) -> dict[str, int]:
        return {topic: len(sent) for topic, sent in self.sent.items()}

    def since(self, mark: dict[str, int]) -> dict[str, list[str]]:
        return {topic: [f for f, _ in sent[mark[topic] :]] for topic, sent in self.sent.items()}


class ValidStream(threading.Thread):
    """Valid messages on both topics at a steady rate, until stopped."""

    def __init__(self, streams: Streams, period_s: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.streams = streams
        self.period_s = period_s
        self.stopped = threading.Event()

    def run(self) -> None:
        count = 0
        while not self.stopped.wait(self.period_s):
            self.streams.valid(self.streams.joints)
            if count % 10 == 0:
                self.streams.valid(self.streams.camera)
            count += 1

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5.0)


def bag_problems(bag: Path) -> tuple[list[str], dict[str, list]]:
    """Read a bag as the dataset builder does; what is wrong with it, and its messages."""
    try:
        messages = read_bag(bag)
    except Exception as error:
        return [f"{bag.name}: not readable with rosbags: {type(error).__name__}: {error}"], {}
    problems = []
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    listed = {
        t["topic_metadata"]["name"]: t["message_count"] for t in info["topics_with_message_count"]
    }
    counted = {topic: len(m) for topic, m in messages.items()}
    if {t: n for t, n in listed.items() if n} != counted:
        problems.append(f"{bag.name}: metadata counts {listed}, the bag holds {counted}")
    if info["message_count"] != sum(counted.values()):
        problems.append(f"{bag.name}: metadata message_count {info['message_count']}")
    events = [m.event for _, m, _ in messages.get("/dp/episode", [])]
    if not events or events[0] != EpisodeEvent.EVENT_START or events.count(1) != 1:
        problems.append(f"{bag.name}: episode events {events}")
    return problems, messages


def test_the_recorder_under_malformed_input_type_changes_and_a_service_storm(
    ros_processes, graph_probe, tmp_path
) -> None:
    rng = random.Random(SEED)
    uid = f"fuzz{int(time.time() * 1000) % 100000}"
    node = f"recorder_{uid}"
    camera, joints = f"/{uid}/camera", f"/{uid}/joint_states"
    # A topic with a configured type whose first publisher has another type; the right one
    # comes later.
    pinned = f"/{uid}/gripper_states"
    output_dir = tmp_path / "demos"
    problems: list[str] = []
    statuses = graph_probe.collect(f"/{node}/status", String)
    published_events = graph_probe.collect("/dp/episode", EpisodeEvent, 100)
    streams = Streams(graph_probe, camera, joints)
    recorder = ros_processes.start_python_module(
        node,
        "dp_recorder",
        parameters={
            "topics": [
                camera,
                f"{joints}=sensor_msgs/msg/JointState",
                f"{pinned}=sensor_msgs/msg/JointState",
            ],
            "output_dir": str(output_dir),
            "graph_poll_period": 0.1,
            "status_period": 0.2,
            "flush_period": 0.5,
        },
    )
    assert recorder.wait_for_output(f"recording {camera}", 30.0), recorder.output()
    assert recorder.wait_for_output(f"recording {joints}", 5.0), recorder.output()
    graph_probe.wait_until(
        lambda: all(p.get_subscription_count() >= 1 for p in streams.publishers.values()),
        10.0,
        "the recorder subscribed to the test's publishers",
    )
    time.sleep(0.5)  # the recorder discovers the publishers after they discover it
    clients = {
        "start": [graph_probe.node.create_client(StartEpisode, f"/{node}/start_episode")],
        "stop": [graph_probe.node.create_client(StopEpisode, f"/{node}/stop_episode")],
    }
    for client in clients["start"] + clients["stop"]:
        assert client.wait_for_service(timeout_sec=10.0)

    def call(kind: str, request: Any, timeout: float = 60.0) -> Any:
        future = clients[kind][0].call_async(request)
        graph_probe.wait_until(future.done, timeout, f"response of {kind}_episode")
        return future.result()

    def last_status() -> dict:
        return json.loads(statuses.messages[-1].data) if statuses.messages else {}

    started_names: list[str] = []  # every episode whose start succeeded
    stop_requests: dict[str, tuple[Any, Any]] = {}  # episode name: (request, response)

    def controlled_episode(task: str, publish) -> tuple[Path, dict[str, list[str]]]:
        """Start, publish, wait until the recorder has everything, stop; the bag and what was
        published while the episode was recorded."""
        started = call("start", StartEpisode.Request(task=task))
        assert started.success, started.message
        started_names.append(started.episode_name)
        mark = streams.mark()
        publish()
        if not streams.acknowledged():
            problems.append(f"{task}: the recorder did not acknowledge every message in 20 s")
        published = streams.since(mark)
        request = StopEpisode.Request(task_success=True)
        stopped = call("stop", request)
        stop_requests[started.episode_name] = (request, stopped)
        if not stopped.success:
            problems.append(f"{task}: stop failed: {stopped.message}")
        return Path(started.bag_path), published

    def check_exact(bag: Path, published: dict[str, list[str]], what: str) -> dict:
        found, messages = bag_problems(bag)
        problems.extend(found)
        for topic, expected in published.items():
            # As a multiset: the bag is in log-time (receive) order, and a sample that DDS
            # repaired arrives after later ones.
            recorded = frame_ids(messages.get(topic, []))
            missing = Counter(expected) - Counter(recorded)
            extra = Counter(recorded) - Counter(expected)
            if missing or extra:
                problems.append(
                    f"{what}: {topic}: {len(recorded)} recorded, {len(expected)} published "
                    f"(missing {sorted(missing)[:10]}, unexpected or twice {sorted(extra)[:10]})"
                )
        return messages

    # 1. Malformed, oversized and undecodable messages amid valid ones, with bursts. ----------
    def malformed_phase() -> None:
        images = malformed_images(rng, 0)
        joint_states = malformed_joint_states(rng, 1000)
        junk = {
            camera: garbage(rng, serialize_message(valid_image(0))),
            joints: garbage(rng, serialize_message(valid_joints(0))),
        }
        plan: list[tuple[str, str, Any]] = [("valid", camera, None)] * 40
        plan += [("valid", joints, None)] * 200
        plan += [("bad", camera, m) for m in images] + [("bad", joints, m) for m in joint_states]
        plan += [("raw", t, data) for t, items in junk.items() for data in items]
        rng.shuffle(plan)
        for number, (kind, topic, item) in enumerate(plan):
            if kind == "valid":
                streams.valid(topic)
            elif kind == "bad":
                streams.malformed(topic, item)
            else:
                streams.raw(topic, item)
            if number % 50 == 49:
                time.sleep(0.05)
        for _ in range(300):  # a burst, as fast as rclpy publishes
            streams.valid(joints)
        for _ in range(30):
            streams.valid(camera)
        # The status counts what was refused, per topic, while the episode runs.
        streams.acknowledged()
        expected = {topic: streams.garbage[topic] - garbage_before[topic] for topic in junk}

        def refused_in_status() -> dict[str, int]:
            topics = last_status().get("topics", {})
            return {topic: topics.get(topic, {}).get("refused", 0) for topic in junk}

        try:
            graph_probe.wait_until(lambda: refused_in_status() == expected, 10.0, "status")
        except TimeoutError:
            problems.append(f"status: refused {refused_in_status()}, {expected} were refused")

    garbage_before = Counter(streams.garbage)
    bag, published = controlled_episode("malformed", malformed_phase)
    check_exact(bag, published, "malformed episode")
    refused = streams.garbage - garbage_before
    graph_probe.wait_until(lambda: last_status().get("state") == "idle", 5.0, "status idle")
    log = recorder.output()
    for topic, count in refused.items():
        said = f"refused {count} message(s) on {topic}"
        if said not in log:
            problems.append(f"malformed episode: no log line says {said!r}")
    bag_custom = custom_data(bag)
    if bag_custom.get("refused_messages") != str(sum(refused.values())):
        problems.append(
            f"malformed episode: custom data refused_messages "
            f"{bag_custom.get('refused_messages')!r}, {sum(refused.values())} were refused"
        )
    for cause in ("nanosec", "data size", "non-finite", "duplicate", "after its receive time"):
        if cause not in bag_custom.get("anomalies", ""):
            problems.append(f"malformed episode: anomalies in custom data lack {cause!r}")
    for cause in ("nanosec", "non-finite", "duplicate joint names"):
        if not any(cause in x and "noted" in x for x in log.splitlines()):
            problems.append(f"malformed episode: no log line notes {cause!r}")

    # 2. A publisher of another type appears on both recorded topics mid-episode. -------------
    def type_change_phase() -> None:
        valid = ValidStream(streams)
        valid.start()
        time.sleep(0.5)
        ros_processes.start_python_module(
            f"intruder_{uid}",
            "dp_testing.wrong_type_talker",
            parameters={
                "topics": [
                    f"{camera}=sensor_msgs/msg/JointState",
                    f"{joints}=sensor_msgs/msg/Image",
                    f"{pinned}=sensor_msgs/msg/Image",
                ]
            },
        )
        try:
            graph_probe.wait_until(
                lambda: len(last_status().get("type_conflicts", {})) == 3,
                10.0,
                "the status names the three type conflicts",
            )
        except TimeoutError as error:
            problems.append(f"type change: {error}; status {last_status()}")
        time.sleep(1.0)
        valid.stop()

    bag, published = controlled_episode("type_change", type_change_phase)
    check_exact(bag, published, "type-change episode")
    log = recorder.output()
    if "now subscribed with best_effort" in log:
        problems.append("type change: a publisher of another type downgraded the QoS")
    for topic in (camera, joints):
        if not any("type" in x and topic in x and "not recorded" in x for x in log.splitlines()):
            problems.append(f"type change: no log line says what is not recorded on {topic}")
    if "type_conflicts" not in custom_data(bag):
        problems.append("type change: the bag's custom data does not mention the conflict")

    # 3. A storm of start and stop calls from several clients while the streams run. ----------
    for _ in range(3):
        clients["start"].append(
            graph_probe.node.create_client(StartEpisode, f"/{node}/start_episode")
        )
        clients["stop"].append(graph_probe.node.create_client(StopEpisode, f"/{node}/stop_episode"))
    for client in clients["start"] + clients["stop"]:
        assert client.wait_for_service(timeout_sec=10.0)
    calls: list[tuple[str, Any, Any]] = []
    valid = ValidStream(streams)
    valid.start()
    storm_mark = streams.mark()
    # First, one call after the other, each kind of wrong call (whatever the waves below bring
    # by chance) and one episode long enough for the check of its messages.
    prelude: list[tuple[str, Any, float]] = [
        ("stop", StopEpisode.Request(task_success=True), 0.0),  # nothing to stop
        ("start", StartEpisode.Request(task="  "), 0.0),  # no task
        ("start", StartEpisode.Request(task="storm", episode_name="twice"), 1.0),
        ("start", StartEpisode.Request(task="storm"), 0.0),  # one is running
        ("stop", StopEpisode.Request(task_success=True), 0.0),
        ("start", StartEpisode.Request(task="storm", episode_name="twice"), 0.0),  # exists
    ]
    for kind, request, pause_s in prelude:
        future = clients[kind][0].call_async(request)
        calls.append((kind, request, future))
        graph_probe.wait_until(future.done, 60.0, f"response of {kind}_episode")
        time.sleep(pause_s)
    for _ in range(12):
        wave = []
        for _ in range(rng.randint(2, 6)):
            choice = rng.random()
            if choice < 0.35:
                wave.append(("start", StartEpisode.Request(task="storm")))
            elif choice < 0.45:
                wave.append(("start", StartEpisode.Request(task="storm", episode_name="twice")))
            elif choice < 0.5:
                wave.append(("start", StartEpisode.Request(task="  ")))  # no task
            elif choice < 0.85:
                wave.append(("stop", StopEpisode.Request(task_success=rng.random() < 0.5)))
            else:
                wave.append(("stop", StopEpisode.Request(discard=True, notes="storm")))
        rng.shuffle(wave)
        for kind, request in wave:
            client = rng.choice(clients[kind])
            calls.append((kind, request, client.call_async(request)))
            time.sleep(rng.uniform(0.0, 0.02))
        time.sleep(rng.uniform(0.0, 0.4))
    try:
        graph_probe.wait_until(
            lambda: all(f.done() for _, _, f in calls), 60.0, "responses to every storm call"
        )
    except TimeoutError as error:
        unanswered = sum(not f.done() for _, _, f in calls)
        problems.append(f"storm: {error}: {unanswered} of {len(calls)} calls unanswered")
    final = StopEpisode.Request(task_success=True)
    calls.append(("stop", final, clients["stop"][0].call_async(final)))
    graph_probe.wait_until(calls[-1][2].done, 60.0, "the final stop")
    valid.stop()
    storm_published = {t: list(s[storm_mark[t] :]) for t, s in streams.sent.items()}
    storm_started: list[str] = []
    refusals: Counter[str] = Counter()  # what the storm's failed calls said, by kind
    for kind, request, future in calls:
        if not future.done():
            continue
        response = future.result()
        if not response.success:
            said = response.message
            refusals[
                "running"
                if "being recorded already" in said
                else "exists"
                if "exists already" in said
                else "no task"
                if "no task given" in said
                else "idle"
                if "no episode is being recorded" in said
                else f"other: {said}"
            ] += 1
        if kind == "start" and response.success:
            storm_started.append(response.episode_name)
        elif kind == "stop" and response.success:
            if response.episode_name in stop_requests:
                problems.append(f"storm: {response.episode_name} stopped twice")
            stop_requests[response.episode_name] = (request, response)
    if len(set(storm_started)) != len(storm_started):
        problems.append(f"storm: episode names started twice: {storm_started}")
    started_names.extend(storm_started)
    # The storm must have tried every kind of wrong call, and answered each with its reason.
    if len(storm_started) < 3 or set(refusals) != {"running", "exists", "no task", "idle"}:
        problems.append(f"storm: {len(storm_started)} episodes, refusals {dict(refusals)}")

    # Each storm bag: its end event and outcome as the stop request said; the valid messages
    # published well inside its window all there, none of them in two bags.
    seen: Counter[str] = Counter()
    checked = 0  # valid messages that had to be in a storm bag
    for name in storm_started:
        if name not in stop_requests:
            problems.append(f"storm: {name} started but never stopped successfully")
            continue
        request, response = stop_requests[name]
        bag = Path(response.bag_path)
        found, messages = bag_problems(bag)
        problems.extend(found)
        if not messages:
            continue
        events = messages["/dp/episode"]
        end = events[-1][1].event
        expected_end = EpisodeEvent.EVENT_DISCARD if request.discard else EpisodeEvent.EVENT_STOP
        if len(events) != 2 or end != expected_end:
            problems.append(f"storm: {name}: events {[m.event for _, m, _ in events]}")
        outcome = custom_data(bag).get("outcome")
        expected_outcome = (
            "discarded" if request.discard else "success" if request.task_success else "failure"
        )
        if outcome != expected_outcome:
            problems.append(f"storm: {name}: outcome {outcome}, expected {expected_outcome}")
        total = sum(len(m) for m in messages.values())
        if response.message_count != total:
            problems.append(f"storm: {name}: response says {response.message_count}, bag {total}")
        start_ns, stop_ns = events[0][0], events[-1][0]
        for topic in (camera, joints):
            recorded = frame_ids(messages.get(topic, []))
            seen.update(recorded)
            inside = [f for f, t in storm_published[topic] if start_ns < t < stop_ns - 250_000_000]
            checked += len(inside)
            missing = sorted(set(inside) - set(recorded), key=_seq)
            if missing:
                problems.append(
                    f"storm: {name}: {topic}: {len(missing)} of {len(inside)} valid messages "
                    f"published inside the episode are not in its bag: {missing[:8]}"
                )
            late = [f for f, t in storm_published[topic] if t > stop_ns and f in recorded]
            if late:
                problems.append(f"storm: {name}: {topic}: published after the stop: {late[:5]}")
    twice = [f for f, n in seen.items() if n > 1]
    if twice:
        problems.append(f"storm: valid messages in two bags: {twice[:10]}")
    if checked < 50:
        problems.append(f"storm: only {checked} valid messages fell well inside an episode")
    print(f"storm: {len(calls)} calls, {len(storm_started)} episodes, {checked} messages checked")

    # 4. Still alive, still recording everything, and the right type on the pinned topic. -----
    if not any(pinned in x and "not recorded" in x for x in recorder.output().splitlines()):
        problems.append(f"pinned topic: no log line says that {pinned} is not recorded")
    streams.add_joint_states(graph_probe, pinned)
    subscribed = f"recording {pinned} (sensor_msgs/msg/JointState"
    if not recorder.wait_for_output(subscribed, 10.0):
        problems.append(f"pinned topic: {pinned} not subscribed once a JointState publisher came")
        assert not problems, "\n".join(problems)  # the rest would only time out
    graph_probe.wait_until(
        lambda: streams.publishers[pinned].get_subscription_count() >= 1,
        10.0,
        f"the recorder subscribed to {pinned}",
    )
    time.sleep(0.5)  # the recorder discovers the publisher after it discovers the recorder

    def last_phase() -> None:
        for _ in range(100):
            streams.valid(joints)
            streams.valid(pinned)
            if rng.random() < 0.2:
                streams.valid(camera)
            time.sleep(0.002)
        # A burst within the recorder's qos_depth (1000), stopped as soon as the recorder's
        # DDS reader has it: what it has received but not yet taken belongs to the episode.
        for number in range(900):
            streams.valid(joints)
            if number % 10 == 0:
                streams.valid(camera)

    bag, published = controlled_episode("after", last_phase)
    check_exact(bag, published, "episode after the storm")
    if not recorder.is_running():
        problems.append("the recorder is not running any more")

    # Every bag on disk: an episode that started, once; readable; events consistent with the
    # events published on /dp/episode.
    bags = sorted(p.parent for p in output_dir.rglob("metadata.yaml"))
    names = [b.name for b in bags]
    if sorted(names) != sorted(started_names):
        problems.append(f"bags on disk {sorted(names)} != episodes started {sorted(started_names)}")
    for bag in bags:
        problems.extend(bag_problems(bag)[0])
    events = published_events.wait_for(2 * len(started_names), 10.0)
    pairs = [(e.event, e.episode_name) for e in events]
    for index in range(0, len(pairs) - 1, 2):
        (start_event, start_name), (end_event, end_name) = pairs[index], pairs[index + 1]
        if start_event != 1 or end_event not in (2, 3) or start_name != end_name:
            problems.append(f"/dp/episode out of order at {index}: {pairs[index : index + 2]}")
            break
    if "Traceback" in recorder.output():
        problems.append("the recorder's log has a traceback")
    assert not problems, "\n".join(problems)


def _seq(frame_id: str) -> int:
    return int(frame_id.split(":")[1]) if ":" in frame_id else -1
