"""The recorder node: demonstration episodes to rosbag2 bags, one bag per episode.

A plain node, not a lifecycle node: it drives no hardware and only observes, so nothing needs
the configure/activate handshake; its subscriptions exist from the start (so that latched topics
are caught and discovery is done before the first episode), and the episode services are its
state machine (idle, recording). See README.md.

Topics:  /dp/episode (dp_msgs/EpisodeEvent, published and recorded in the bag),
         ~/status (std_msgs/String, JSON: state, episode, duration, per-topic messages and bytes)
Services: ~/start_episode (dp_msgs/StartEpisode), ~/stop_episode (dp_msgs/StopEpisode)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from std_msgs.msg import String

from dp_msgs.msg import EpisodeEvent
from dp_msgs.srv import StartEpisode, StopEpisode
from dp_recorder import episode as ep
from dp_recorder.clock_trace import SimulatedClockTrace
from dp_recorder.episode_recording import EpisodeRecording, FinishResult
from dp_recorder.episode_writer import BagOptions, EpisodeWriter, EpisodeWriterError, TopicInfo
from dp_recorder.message_checks import MessageCheck
from dp_recorder.message_definitions import MessageDefinitionError, MessageDefinitions
from dp_recorder.qos_matching import to_bag_qos
from dp_recorder.recover import OUTCOME_RECORDING, RecoveryError, recover_bag
from dp_recorder.topic_subscriptions import RecordedTopic, TopicRequest, TopicSubscriptions


@dataclass(frozen=True)
class ParameterSpec:
    default: Any  # a value, or a Parameter.Type for a parameter without default
    description: str


# Every parameter of the node; dp_bringup/config/recorder.yaml sets them for a robot.
PARAMETERS: dict[str, ParameterSpec] = {
    "topics": ParameterSpec(
        Parameter.Type.STRING_ARRAY,  # no default value: rclpy cannot type an empty list
        "Topics to record: 'name', or 'name=pkg/msg/Type' to fix the type (otherwise taken "
        "from the graph). /dp/episode is always recorded.",
    ),
    "output_dir": ParameterSpec(
        "~/dp_demonstrations",
        "Directory of the episode bags (one sub-directory per episode; discarded ones under "
        "discarded/).",
    ),
    "storage_id": ParameterSpec("mcap", "Bag storage: 'mcap' (default) or 'sqlite3'."),
    "compression": ParameterSpec(
        "none", "'none' or 'zstd' (MCAP: compressed chunks; sqlite3: compressed messages)."
    ),
    "metadata_version": ParameterSpec(
        9, "rosbag2 metadata.yaml version: 9 (Jazzy, Kilted) or 8 (also readable by Humble)."
    ),
    "max_episode_duration": ParameterSpec(
        0.0, "Episodes end by themselves after this many seconds (outcome 'timeout'); 0: never."
    ),
    "keep_discarded": ParameterSpec(
        True, "Keep discarded episodes under output_dir/discarded/ (false: delete them)."
    ),
    "default_task": ParameterSpec("", "Task of an episode whose start request names none."),
    "robot_name": ParameterSpec("", "Robot name in the bags' custom data (default: hostname)."),
    "software_version": ParameterSpec(
        "", "Version of the robot's software in the bags' custom data (default: the recorder's)."
    ),
    "flush_period": ParameterSpec(
        1.0,
        "Seconds between flushes to disk: after a SIGKILL, at most the messages received in the "
        "last flush_period are lost.",
    ),
    "qos_depth": ParameterSpec(
        1000,
        "History depth of the recording subscriptions: while DDS repairs a lost sample, later "
        "ones wait in this history, and are lost if it overflows.",
    ),
    "max_queue_bytes": ParameterSpec(
        512 * 2**20,
        "Bytes of messages waiting for the disk before further messages are dropped (counted).",
    ),
    "graph_poll_period": ParameterSpec(
        0.5, "Seconds between looks at the graph for new publishers of the recorded topics."
    ),
    "status_period": ParameterSpec(
        1.0, "Seconds between status messages (~/status) and, while recording, status log lines."
    ),
    "recover_on_start": ParameterSpec(
        True, "At start, repair bags in output_dir that a killed recorder left unfinished."
    ),
}


def recorder_version() -> str:
    try:
        return version("dp_recorder")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class _Episode:
    info: ep.EpisodeInfo
    recording: EpisodeRecording
    bag_path: Path
    started_ns: int
    # Publishers of other types seen on recorded topics during the episode: topic -> what.
    type_conflicts: dict[str, str] = field(default_factory=dict)
    # (topic, cause) of refused and noted messages already named in the log.
    logged_causes: set[tuple[str, str]] = field(default_factory=set)


class RecorderNode(Node):
    """Records demonstration episodes, each into a bag of its own."""

    def __init__(self, node_name: str = "recorder") -> None:
        super().__init__(node_name)
        for name, spec in PARAMETERS.items():
            descriptor = ParameterDescriptor(description=spec.description, read_only=True)
            self.declare_parameter(name, spec.default, descriptor)
        self._output_dir = Path(os.path.expanduser(self._param("output_dir")))
        self._options = BagOptions(
            storage_id=self._param("storage_id"),
            compression=self._param("compression"),
            metadata_version=self._param("metadata_version"),
            ros_distro=os.environ.get("ROS_DISTRO", ""),
        )
        self._definitions = MessageDefinitions()
        self._event_definition = self._definitions.get(ep.EVENT_TYPE)
        self._event_typestore = self._definitions.typestore(ep.EVENT_TYPE)
        self._episode: _Episode | None = None
        self._episode_count = 0
        self._last_end = ""  # why the last episode ended, when it ended by itself

        event_qos = QoSProfile(depth=10)
        self._event_publisher = self.create_publisher(EpisodeEvent, ep.EVENT_TOPIC, event_qos)
        self._event_topic = TopicInfo(
            ep.EVENT_TOPIC, self._event_definition, (to_bag_qos(event_qos),)
        )
        self._status_publisher = self.create_publisher(String, "~/status", 10)
        # Before the recorded topics: their callbacks look their reception up in it.
        self._clock_trace = SimulatedClockTrace(self)
        requests = [TopicRequest.parse(entry) for entry in self._param("topics") if entry]
        requests = [r for r in requests if self.resolve_topic_name(r.name) != ep.EVENT_TOPIC]
        self._recorded_topics = TopicSubscriptions(
            self,
            requests,
            self._param("qos_depth"),
            self._definitions,
            self._on_message,
            self._on_new_topic,
        )
        self.create_service(StartEpisode, "~/start_episode", self._on_start_episode)
        self.create_service(StopEpisode, "~/stop_episode", self._on_stop_episode)
        self._error_guard = self.create_guard_condition(self._on_write_error)
        self._max_duration_timer = None
        self.create_timer(self._param("graph_poll_period"), self._poll_graph)
        self.create_timer(self._param("status_period"), self._publish_status)

        self._prepare_output_dir()
        self._poll_graph()
        if not requests:
            self.get_logger().warning("no topics configured: only /dp/episode is recorded")
        self.get_logger().info(
            f"recorder ready: bags in {self._output_dir} ({self._options.storage_id}, "
            f"compression {self._options.compression}); topics: "
            f"{', '.join(self._recorded_topics.requested) or 'none'}"
        )

    def _param(self, name: str) -> Any:
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:
            return []  # only "topics" has no default

    # Services -----------------------------------------------------------------------------

    def _on_start_episode(
        self, request: StartEpisode.Request, response: StartEpisode.Response
    ) -> StartEpisode.Response:
        if self._episode is not None:
            response.success = False
            response.message = f"episode {self._episode.info.name} is being recorded already"
            response.episode_index = self._episode.info.index
            response.episode_name = self._episode.info.name
            response.bag_path = str(self._episode.bag_path)
            return response
        try:
            episode = self._start_episode(request.task, request.episode_name, request.notes)
        except (ep.EpisodeRequestError, EpisodeWriterError, OSError) as error:
            response.success = False
            response.message = str(error)
            self.get_logger().error(f"episode not started: {error}")
            return response
        response.success = True
        response.message = f"recording episode {episode.info.name}"
        response.episode_index = episode.info.index
        response.episode_name = episode.info.name
        response.bag_path = str(episode.bag_path)
        return response

    def _on_stop_episode(
        self, request: StopEpisode.Request, response: StopEpisode.Response
    ) -> StopEpisode.Response:
        if self._episode is None:
            response.success = False
            response.message = "no episode is being recorded" + (
                f" (the last one ended by itself: {self._last_end})" if self._last_end else ""
            )
            return response
        if request.discard:
            outcome = ep.OUTCOME_DISCARDED
        else:
            outcome = ep.OUTCOME_SUCCESS if request.task_success else ep.OUTCOME_FAILURE
        info = self._episode.info
        result, bag_path = self._end_episode(outcome, request.task_success, request.notes)
        response.episode_index = info.index
        response.episode_name = info.name
        response.bag_path = str(bag_path)
        response.duration = result.bag.duration_s
        response.message_count = result.bag.message_count
        response.success = not result.error
        where = f"in {bag_path}" if bag_path.exists() else "deleted (keep_discarded is false)"
        response.message = result.error or (
            f"episode {info.name} {outcome}: {result.bag.message_count} messages, "
            f"{result.bag.duration_s:.1f} s, {result.dropped} dropped, {where}"
        )
        return response

    # Episodes -----------------------------------------------------------------------------

    def _start_episode(self, task: str, name: str, notes: str) -> _Episode:
        task = task.strip() or self._param("default_task")
        if not task:
            raise ep.EpisodeRequestError(
                "no task given (set the request's task, or the default_task parameter)"
            )
        index = self._episode_count
        name = ep.check_episode_name(name) if name else ep.episode_name(task, index)
        bag_path = self._output_dir / name
        if bag_path.exists() or ep.discarded_path(self._output_dir, name).exists():
            raise ep.EpisodeRequestError(f"a bag named {name} exists already in {bag_path.parent}")
        info = ep.EpisodeInfo(
            index=index,
            name=name,
            task=task,
            notes=notes,
            robot=self._param("robot_name") or socket.gethostname(),
            software_version=self._param("software_version") or recorder_version(),
            recorder_version=recorder_version(),
            start_time=datetime.now(UTC),
        )
        writer = EpisodeWriter(bag_path, self._options, info.custom_data())
        recording = EpisodeRecording(
            writer,
            flush_period_s=self._param("flush_period"),
            max_queue_bytes=self._param("max_queue_bytes"),
            on_error=self._report_write_error,
        )
        recording.start()
        now_ns = self._now_ns()
        self._episode = _Episode(info, recording, bag_path, now_ns)
        self._episode_count += 1
        self._last_end = ""
        self._episode.type_conflicts.update(self._recorded_topics.conflicts)
        recording.add_topic(self._event_topic)
        for topic in self._recorded_topics.topics.values():
            recording.add_topic(topic.info, self._message_check(topic))
        self._emit_event(ep.EVENT_START, notes=notes, stamp_ns=now_ns)
        # Latched messages arrived before the episode: its bag starts with them, at its start.
        for topic in self._recorded_topics.topics.values():
            for _, data in topic.latched_messages.values():
                recording.write(topic.name, now_ns, data)
        max_duration = self._param("max_episode_duration")
        if max_duration > 0:
            self._max_duration_timer = self.create_timer(max_duration, self._on_max_duration)
        self.get_logger().info(f"episode {name} started (task {task}): {bag_path}")
        return self._episode

    def _end_episode(
        self, outcome: str, task_success: bool, notes: str
    ) -> tuple[FinishResult, Path]:
        """Write the end event, close the bag, move a discarded one aside; back to idle."""
        episode = self._episode
        assert episode is not None
        self._cancel_max_duration()
        # The episode ends now: what DDS received until now belongs to it, even what the
        # executor has not taken yet (it serves this call before the rest of a backlog).
        end_ns = self._now_ns()
        self._take_pending(end_ns)
        event = ep.EVENT_DISCARD if outcome == ep.OUTCOME_DISCARDED else ep.EVENT_STOP
        if outcome != ep.OUTCOME_INTERRUPTED:
            # An interrupted episode has no end event, as one whose recorder was killed: nobody
            # said how it ended, and the dataset builder takes an open episode as incomplete.
            self._emit_event(event, success=task_success, notes=notes, stamp_ns=end_ns)
        custom = ep.end_custom_data(
            outcome, task_success, notes, episode.info.notes, episode.recording.dropped
        )
        custom["type_conflicts"] = "; ".join(
            f"{topic}: {text}" for topic, text in sorted(episode.type_conflicts.items())
        )
        result = episode.recording.finish(custom)
        self._log_checks(episode, result.counters, final=True)
        self._episode = None
        bag_path = episode.bag_path
        if result.error:
            self.get_logger().error(f"episode {episode.info.name}: {result.error}")
        elif outcome == ep.OUTCOME_DISCARDED:
            bag_path = self._set_aside(episode)
        self.get_logger().info(
            f"episode {episode.info.name} ended ({outcome}): {result.bag.message_count} "
            f"messages, {result.bag.duration_s:.1f} s, {result.dropped} dropped; {bag_path}"
        )
        return result, bag_path

    def _set_aside(self, episode: _Episode) -> Path:
        if not self._param("keep_discarded"):
            shutil.rmtree(episode.bag_path, ignore_errors=True)
            return episode.bag_path
        target = ep.discarded_path(self._output_dir, episode.info.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(episode.bag_path, target)
        return target

    def _emit_event(
        self,
        event: int,
        success: bool = False,
        notes: str = "",
        stamp_ns: int | None = None,
    ) -> None:
        episode = self._episode
        assert episode is not None
        stamp_ns = self._now_ns() if stamp_ns is None else stamp_ns
        # The bag gets the event directly, not through a subscription: it is in the bag whatever
        # DDS does, and at the exact start and end of the recording.
        data = ep.episode_event_cdr(
            self._event_typestore, stamp_ns, event, episode.info, success, notes
        )
        episode.recording.write(ep.EVENT_TOPIC, stamp_ns, data)
        if self.context.ok():  # (at shutdown there is no one to tell)
            message = EpisodeEvent(
                event=event,
                episode_index=episode.info.index,
                episode_name=episode.info.name,
                task=episode.info.task,
                success=success,
                notes=notes,
            )
            message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, 10**9)
            self._event_publisher.publish(message)

    def _on_max_duration(self) -> None:
        if self._episode is None:
            self._cancel_max_duration()
            return
        limit = self._param("max_episode_duration")
        name = self._episode.info.name
        notes = f"maximum episode duration of {limit:g} s reached"
        self._end_episode(ep.OUTCOME_TIMEOUT, False, notes)
        self._last_end = f"{name}: {notes}"

    def _cancel_max_duration(self) -> None:
        timer, self._max_duration_timer = self._max_duration_timer, None
        if timer is not None:
            with contextlib.suppress(Exception):  # at shutdown the context may be gone
                self.destroy_timer(timer)

    def _report_write_error(self, message: str) -> None:
        # Called in the writer thread: the executor handles it (and the recording knows why).
        self._error_guard.trigger()

    def _on_write_error(self) -> None:
        if self._episode is None or not self._episode.recording.error:
            return
        name = self._episode.info.name
        error = self._episode.recording.error
        self._end_episode(ep.OUTCOME_ERROR, False, f"recording error: {error}")
        self._last_end = f"{name}: {error}"

    def shutdown_recording(self, reason: str) -> None:
        """End a running episode as interrupted (the node is going down)."""
        if self._episode is None:
            return
        self.get_logger().warning(f"{reason}: ending episode {self._episode.info.name}")
        self._end_episode(ep.OUTCOME_INTERRUPTED, False, reason)

    # Messages -----------------------------------------------------------------------------

    def _on_message(
        self,
        topic: RecordedTopic,
        data: bytes,
        info: dict[str, Any],
        until_ns: int | None = None,
    ) -> None:
        timestamp_ns = self._receive_time_ns(info)
        if topic.latched:
            gid = info.get("publisher_gid") or {}
            topic.latched_messages[bytes(gid.get("data", b""))] = (timestamp_ns, data)
        episode = self._episode
        if episode is None:
            return
        if timestamp_ns < episode.started_ns:
            # Received before the episode started, delivered to us after: not part of it, unless
            # it is latched state, which the bag starts with (at its start, like the replay).
            if not topic.latched:
                return
            timestamp_ns = episode.started_ns
        if until_ns is not None and timestamp_ns > until_ns:
            return  # received after the episode's end, taken while ending it
        episode.recording.write(topic.name, timestamp_ns, data)

    def _take_pending(self, until_ns: int) -> None:
        """Hand what DDS received until ``until_ns`` and nobody took yet to the episode."""
        limit = max(1, self._param("qos_depth"))  # a history holds no more
        for topic in list(self._recorded_topics.topics.values()):
            try:
                for data, info in self._recorded_topics.take_pending(topic, limit):
                    self._on_message(topic, data, info, until_ns)
            except Exception as error:  # at shutdown the subscriptions may be gone already
                if self.context.ok():
                    self.get_logger().warning(f"{topic.name}: backlog not taken: {error}")

    def _on_new_topic(self, topic: RecordedTopic) -> None:
        if self._episode is not None:
            self._episode.recording.add_topic(topic.info, self._message_check(topic))

    def _message_check(self, topic: RecordedTopic) -> MessageCheck | None:
        # One per episode and topic: it keeps the topic's last stamp (backwards stamps).
        try:
            typestore = self._definitions.typestore(topic.info.msgtype)
        except MessageDefinitionError:
            return None  # not reached: the topic was subscribed with this definition
        return MessageCheck(topic.info.msgtype, typestore)

    def _poll_graph(self) -> None:
        self._recorded_topics.poll_graph()
        if self._episode is not None:
            for name, text in self._recorded_topics.conflicts.items():
                self._episode.type_conflicts.setdefault(name, text)

    def _log_checks(self, episode: _Episode, counters: dict, final: bool = False) -> None:
        """Name each cause of refused or noted messages once per episode; sum up at the end."""
        name = episode.info.name
        for topic, c in counters.items():
            for cause in c.refusals:
                if (topic, cause) not in episode.logged_causes:
                    episode.logged_causes.add((topic, cause))
                    self.get_logger().error(
                        f"{topic}: refused a message ({cause}: {c.examples.get(cause, '')}); "
                        "refused messages are not written to the bag, the status counts them"
                    )
            for cause in c.notes:
                if (topic, cause) not in episode.logged_causes:
                    episode.logged_causes.add((topic, cause))
                    self.get_logger().warning(
                        f"{topic}: noted {cause}; such messages are recorded as received, "
                        "the status counts them"
                    )
            if final and c.refused:
                causes = ", ".join(f"{n} x {cause}" for cause, n in sorted(c.refusals.items()))
                self.get_logger().error(
                    f"episode {name}: refused {c.refused} message(s) on {topic} ({causes})"
                )
            if final and c.notes:
                causes = ", ".join(f"{n} x {cause}" for cause, n in sorted(c.notes.items()))
                self.get_logger().warning(f"episode {name}: {topic} recorded with {causes}")

    def _receive_time_ns(self, info: dict[str, Any]) -> int:
        # The middleware's reception time is exact (taken before the executor ran), but it is
        # system time: with simulated time, the /clock value received just before it.
        received = info.get("received_timestamp") or 0
        if received and not self.get_clock().ros_time_is_active:
            return received
        if received:
            simulated = self._clock_trace.time_at(received)
            if simulated is not None:
                return simulated
        return self._now_ns()

    def _now_ns(self) -> int:
        try:
            return self.get_clock().now().nanoseconds
        except Exception:  # the clock is gone once the context shut down
            return time.time_ns()

    # Status -------------------------------------------------------------------------------

    def _publish_status(self) -> None:
        status = self.status()
        self._status_publisher.publish(String(data=json.dumps(status)))
        if self._episode is not None:
            self._log_checks(self._episode, self._episode.recording.counters_copy())
            topics = ", ".join(
                f"{name} {t['messages']} msgs {t['bytes'] / 1e6:.1f} MB"
                + (f" ({t['dropped']} dropped)" if t["dropped"] else "")
                + (f" ({t['refused']} refused)" if t["refused"] else "")
                for name, t in status["topics"].items()
            )
            self.get_logger().info(
                f"recording {status['episode_name']} {status['duration']:.1f} s: {topics}; "
                f"queue {status['queued_bytes'] / 1e6:.1f} MB"
            )

    def status(self) -> dict[str, Any]:
        """The recorder's state, as ~/status publishes it (JSON)."""
        episode = self._episode
        status: dict[str, Any] = {
            "state": "recording" if episode else "idle",
            "episode_name": episode.info.name if episode else "",
            "episode_index": episode.info.index if episode else -1,
            "task": episode.info.task if episode else "",
            "bag_path": str(episode.bag_path) if episode else "",
            "duration": (self._now_ns() - episode.started_ns) / 1e9 if episode else 0.0,
            "topics": {},
            "queued_bytes": episode.recording.queued_bytes if episode else 0,
            "dropped": episode.recording.dropped if episode else 0,
            "refused": 0,
            "subscribed": sorted(self._recorded_topics.topics),
            "waiting_for_publishers": self._recorded_topics.waiting_for(),
            "last_end": self._last_end,
            "type_conflicts": dict(self._recorded_topics.conflicts),
        }
        if episode:
            for name, counters in episode.recording.counters_copy().items():
                status["topics"][name] = {
                    "messages": counters.messages,
                    "bytes": counters.bytes,
                    "dropped": counters.dropped,
                    "refused": counters.refused,
                    "refusals": counters.refusals,
                    "notes": counters.notes,
                }
                status["refused"] += counters.refused
        return status

    # Start-up -----------------------------------------------------------------------------

    def _prepare_output_dir(self) -> None:
        try:
            self._output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            # Not fatal: the directory may become available (a disk mounted later); every
            # start request says why it fails meanwhile.
            self.get_logger().error(f"output_dir {self._output_dir} is not usable: {error}")
            return
        if self._param("recover_on_start"):
            self._recover_unfinished()

    def _recover_unfinished(self) -> None:
        candidates = [*self._output_dir.glob("*/metadata.yaml")]
        candidates += self._output_dir.glob(f"{ep.DISCARDED_DIR}/*/metadata.yaml")
        for metadata in candidates:
            bag = metadata.parent
            if f"outcome: {OUTCOME_RECORDING}" not in metadata.read_text(errors="replace"):
                continue
            try:
                report = recover_bag(bag)
            except (RecoveryError, OSError, ValueError) as error:
                self.get_logger().warning(f"unfinished bag {bag} not recovered: {error}")
                continue
            self.get_logger().warning(f"unfinished bag from an earlier run: {report.summary()}")


def main(args: list[str] | None = None) -> None:
    # A write past a file size limit must fail with EFBIG, as on a full disk, not kill us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    rclpy.init(args=args)
    node = None
    reason = "shutdown"
    try:
        node = RecorderNode()
        rclpy.spin(node)
    except KeyboardInterrupt:
        reason = "interrupted (SIGINT)"
    except ExternalShutdownException:
        reason = "shut down by a signal"
    except rclpy_implementation.RCLError:
        # rclpy's signal handler shuts the context down asynchronously: an executor between
        # its checks then fails to build its wait set, or a callback to publish. That is the
        # signal's shutdown, not a fault (exit 0); with the context still valid it is a fault.
        if rclpy.ok():
            raise
        reason = "shut down by a signal"
    finally:
        if node is not None:
            node.shutdown_recording(reason)
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main(sys.argv)
