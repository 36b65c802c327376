"""Raw subscriptions to the recorded topics, created and adapted as the graph changes.

Each configured topic gets a subscription once a publisher appears in the graph: its type comes
from the configuration or, when not given, from the graph; its QoS from the publishers (see
``qos_matching``). Messages are taken serialised (``raw=True``): nothing is decoded on the way
to the bag. The graph is polled, so that topics whose publishers start later are picked up, and
a subscription that a new publisher cannot serve (a best-effort publisher after a reliable one)
is recreated. A topic whose publishers disappear keeps its subscription: when they come back,
recording goes on.

A topic has one type in a bag. Publishers of another type on a recorded topic (a second driver,
a misconfigured node) are not recorded: DDS never delivers their messages to a subscription of
the recorded type. They are named in ``conflicts`` (the status and the bag's custom data) and in
the log, once per type, and they are left out of the QoS choice: a best-effort publisher of the
wrong type must not turn the subscription of the right one best effort. When a topic's type is
configured, its publishers of that type are recorded whatever else appears on it; otherwise a
topic whose publishers disagree on the type from the start is not recorded, as the log says.

Latched (transient-local) topics deliver their message once, usually long before an episode
starts; the latest message of each of their publishers is kept, so that every episode's bag
starts with them.
"""

from __future__ import annotations

import importlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.subscription import Subscription

from dp_recorder.episode_writer import TopicInfo
from dp_recorder.message_definitions import (
    MessageDefinitionError,
    MessageDefinitions,
    normalize_type_name,
)
from dp_recorder.qos_matching import describe, is_compatible, subscription_qos, to_bag_qos


@dataclass(frozen=True)
class TopicRequest:
    """A configured topic: "name" or "name=pkg/msg/Type"."""

    name: str
    msgtype: str = ""  # empty: taken from the graph

    @classmethod
    def parse(cls, entry: str) -> TopicRequest:
        name, _, msgtype = entry.strip().partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"topic entry {entry!r} has no topic name")
        return cls(name, normalize_type_name(msgtype) if msgtype.strip() else "")


@dataclass
class RecordedTopic:
    """A topic with its subscription (and, after a QoS change, the one it replaces)."""

    info: TopicInfo
    qos: QoSProfile
    subscription: Subscription
    latched_messages: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    # Replaced subscriptions, kept until the new one serves every publisher: (it, since when).
    retiring: list[tuple[Subscription, float]] = field(default_factory=list)
    matched_since: float | None = None  # when the current one was first seen matched
    # (publisher gid, sequence number) of the latest samples taken, so that a sample that the
    # old and the new subscription both receive is recorded once.
    recent: OrderedDict[tuple[bytes, int], None] = field(default_factory=OrderedDict)
    recent_limit: int = 2000

    def first_delivery(self, info: dict[str, Any]) -> bool:
        """False for a sample taken already (through another subscription of the topic)."""
        gid = (info.get("publisher_gid") or {}).get("data")
        sequence = info.get("publication_sequence_number")
        if not gid or not sequence:
            return True  # an rmw that does not say: nothing to compare
        key = (bytes(gid), sequence)
        if key in self.recent:
            return False
        self.recent[key] = None
        if len(self.recent) > self.recent_limit:
            self.recent.popitem(last=False)
        return True

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def latched(self) -> bool:
        return self.qos.durability == DurabilityPolicy.TRANSIENT_LOCAL


MessageCallback = Callable[[RecordedTopic, bytes, dict[str, Any]], None]


# Seconds a replaced subscription is kept at most while its successor is not matched with every
# publisher (a publisher that never matches must not keep it forever).
RETIRE_TIMEOUT_S = 10.0
# Seconds it is kept after its successor is matched: the subscription learns of a publisher
# before that publisher learns of it and starts sending to it.
RETIRE_GRACE_S = 1.0


class TopicSubscriptions:
    """The recorder's subscriptions; every method runs in the node's executor."""

    def __init__(
        self,
        node: Node,
        requests: list[TopicRequest],
        depth: int,
        definitions: MessageDefinitions,
        on_message: MessageCallback,
        on_new_topic: Callable[[RecordedTopic], None],
    ) -> None:
        self._node = node
        self._requests = {node.resolve_topic_name(r.name): r for r in requests}
        self._depth = depth
        self._definitions = definitions
        self._on_message = on_message
        self._on_new_topic = on_new_topic
        self.topics: dict[str, RecordedTopic] = {}
        self.conflicts: dict[str, str] = {}  # topic: what is published on it and not recorded
        self._reported: set[tuple[str, str]] = set()

    @property
    def requested(self) -> list[str]:
        return list(self._requests)

    def waiting_for(self) -> list[str]:
        """Configured topics without publishers so far."""
        return [name for name in self._requests if name not in self.topics]

    def poll_graph(self) -> None:
        """Subscribe to topics that have publishers now; adapt subscriptions that cannot serve."""
        for name, request in self._requests.items():
            publishers = self._node.get_publishers_info_by_topic(name)
            if not publishers:
                self._set_conflict(name, "")
                if name in self.topics:
                    self._retire(self.topics[name], 0)
                continue
            recorded = self.topics.get(name)
            if recorded is None:
                self._subscribe(name, request, publishers)
                continue
            matching = self._note_other_types(recorded, publishers)
            self._retire(recorded, len(matching))
            if not all(is_compatible(recorded.qos, p.qos_profile) for p in matching):
                self._resubscribe(recorded, matching)

    def take_pending(self, topic: RecordedTopic, limit: int) -> Iterator[tuple[bytes, dict]]:
        """Messages that DDS has received for ``topic`` and the executor has not taken yet.

        The executor takes one message per subscription per turn and then serves a waiting
        service call: a stop request would end the episode before a backlog the recorder had
        already received. The node takes the backlog itself before it closes the bag. (rclpy
        has no public take; this is what its executor calls.)
        """
        for subscription in [topic.subscription, *(old for old, _ in topic.retiring)]:
            for data, info in _take(subscription, limit):
                if topic.first_delivery(info):
                    yield data, info

    def _note_other_types(self, recorded: RecordedTopic, publishers: list) -> list:
        """Name the publishers of other types as a conflict; the publishers of the topic's."""
        msgtype = recorded.info.msgtype
        others = sorted({_type_of(p) for p in publishers} - {msgtype})
        text = (
            f"publishers of another type ({', '.join(others)}) on the topic; recording "
            f"{msgtype} only, messages of {', '.join(others)} are not recorded"
        )
        self._set_conflict(recorded.name, text if others else "")
        return [p for p in publishers if _type_of(p) == msgtype]

    def _set_conflict(self, name: str, text: str) -> None:
        previous = self.conflicts.get(name, "")
        if text == previous:
            return
        if text:
            self.conflicts[name] = text
            self._node.get_logger().error(f"{name}: {text}")
        else:
            del self.conflicts[name]
            self._node.get_logger().info(f"{name}: no publisher of another type any more")

    def _subscribe(self, name: str, request: TopicRequest, publishers: list) -> None:
        graph_types = sorted({_type_of(p) for p in publishers})
        msgtype = request.msgtype or (graph_types[0] if len(graph_types) == 1 else "")
        if not msgtype:
            self.conflicts[name] = (
                f"publishers disagree on the type ({', '.join(graph_types)}): not recorded; "
                "give the type in the topics parameter (name=pkg/msg/Type)"
            )
            self._report_once(name, "types", f"not recording {name}: {self.conflicts[name]}")
            return
        matching = [p for p in publishers if _type_of(p) == msgtype]
        others = [t for t in graph_types if t != msgtype]
        if not matching:
            self.conflicts[name] = (
                f"configured as {msgtype}, published as {', '.join(others)}: not recorded"
            )
            self._report_once(name, "mismatch", f"not recording {name}: {self.conflicts[name]}")
            return
        try:
            definition = self._definitions.get(msgtype)
            message_class = message_class_of(msgtype)
        except (MessageDefinitionError, ImportError, AttributeError) as error:
            self._report_once(name, "type", f"not recording {name}: {error}")
            return
        self.conflicts.pop(name, None)
        profiles = [p.qos_profile for p in matching]
        qos = subscription_qos(profiles, self._depth)
        info = TopicInfo(name, definition, tuple(to_bag_qos(p) for p in profiles))
        recorded = RecordedTopic(info, qos, None)  # type: ignore[arg-type]
        recorded.recent_limit = 2 * max(1, self._depth)  # a history holds at most depth
        recorded.subscription = self._create(message_class, recorded)
        self.topics[name] = recorded
        self._node.get_logger().info(f"recording {name} ({msgtype}; {describe(qos)})")
        self._on_new_topic(recorded)
        self._note_other_types(recorded, publishers)

    def _resubscribe(self, recorded: RecordedTopic, publishers: list) -> None:
        profiles = [p.qos_profile for p in publishers]
        qos = subscription_qos(profiles, self._depth)
        old = recorded.subscription
        recorded.qos = qos
        recorded.info = TopicInfo(
            recorded.info.name, recorded.info.definition, tuple(to_bag_qos(p) for p in profiles)
        )
        # The old subscription stays until the new one is matched with every publisher (DDS
        # takes a moment; a reliable stream would lose what it sends meanwhile); samples that
        # both receive are recorded once (first_delivery).
        recorded.subscription = self._create(message_class_of(recorded.info.msgtype), recorded)
        recorded.retiring.append((old, time.monotonic()))
        recorded.matched_since = None
        self._node.get_logger().info(
            f"{recorded.name}: publishers changed, now subscribed with {describe(qos)}"
        )

    def _retire(self, recorded: RecordedTopic, publishers: int) -> None:
        """Destroy replaced subscriptions once the current one serves ``publishers``."""
        if not recorded.retiring:
            return
        now = time.monotonic()
        if recorded.subscription.get_publisher_count() < publishers:
            recorded.matched_since = None
        elif recorded.matched_since is None:
            recorded.matched_since = now
        matched = recorded.matched_since is not None and now - recorded.matched_since > (
            RETIRE_GRACE_S
        )
        keep = []
        for old, since in recorded.retiring:
            if matched or now - since > RETIRE_TIMEOUT_S:
                # What it received and nobody took yet would go with it.
                for data, info in _take(old, self._depth):
                    if recorded.first_delivery(info):
                        self._on_message(recorded, data, info)
                self._node.destroy_subscription(old)
            else:
                keep.append((old, since))
        recorded.retiring = keep

    def _create(self, message_class: type, recorded: RecordedTopic) -> Subscription:
        def callback(data: bytes, info: dict[str, Any]) -> None:
            if recorded.first_delivery(info):
                self._on_message(recorded, data, info)

        return self._node.create_subscription(
            message_class, recorded.name, callback, recorded.qos, raw=True
        )

    def _report_once(self, topic: str, kind: str, text: str) -> None:
        if (topic, kind) not in self._reported:
            self._reported.add((topic, kind))
            self._node.get_logger().error(text)


def _take(subscription: Subscription, limit: int) -> Iterator[tuple[bytes, dict]]:
    """Up to ``limit`` messages waiting in ``subscription``, as its executor would take them."""
    for _ in range(limit):
        with subscription.handle:
            taken = subscription.handle.take_message(subscription.msg_type, subscription.raw)
        if taken is None:
            return
        yield taken


def _type_of(publisher: Any) -> str:
    """The type of a publisher in the graph, "pkg/msg/Name" (as the graph says, if odd)."""
    try:
        return normalize_type_name(publisher.topic_type)
    except MessageDefinitionError:
        return publisher.topic_type


def message_class_of(msgtype: str) -> type:
    """The Python class of "pkg/msg/Name"; raises ImportError or AttributeError."""
    package, _, name = normalize_type_name(msgtype).split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)
