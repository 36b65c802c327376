"""Message definitions and type hashes of recorded types, for storing them in the bag.

A bag must describe its own message types: the dataset builder reads bags with ``rosbags`` and an
empty typestore, so every type (``dp_msgs`` included) has to be decodable from the definition
stored in the bag (the MCAP schema record, the sqlite3 ``message_definitions`` table). The
definitions come from the ``.msg`` files that the installed packages ship in
``share/<package>/msg``, the same source rosbag2 uses; the hash is checked against the RIHS01
hash that rosidl generated next to them (``.json``), so a reader that verifies hashes agrees with
the publishers. Types whose ``.msg`` file is not installed fall back to the definitions built into
``rosbags``.

No rclpy here: the package index is read with ``ament_index_python`` only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore


class MessageDefinitionError(Exception):
    """The definition of a message type could not be found or does not match its hash."""


@dataclass(frozen=True)
class MessageDefinition:
    """What a bag stores about one message type."""

    msgtype: str  # "pkg/msg/Name"
    text: str  # ros2msg: the type, then each dependency after a "MSG: pkg/Name" separator
    rihs01: str  # "RIHS01_<sha256>", the hash rosidl computes for the type


def package_share_directory(package: str) -> Path | None:
    """The ``share/<package>`` directory of an installed package, or None."""
    # Imported here so that the rest of the module works where ament is absent.
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        return Path(get_package_share_directory(package))
    except (PackageNotFoundError, ValueError):
        return None


class MessageDefinitions:
    """Finds, checks and caches the definitions of message types by name."""

    def __init__(self, share_directory: Callable[[str], Path | None] = package_share_directory):
        self._share_directory = share_directory
        self._cache: dict[str, MessageDefinition] = {}
        self._typestores: dict[str, Typestore] = {}
        self._builtin: Typestore | None = None

    def get(self, msgtype: str) -> MessageDefinition:
        """The definition of ``msgtype`` ("pkg/msg/Name"); raises MessageDefinitionError."""
        msgtype = normalize_type_name(msgtype)
        if msgtype not in self._cache:
            self._cache[msgtype] = self._load(msgtype)
        return self._cache[msgtype]

    def typestore(self, msgtype: str) -> Typestore:
        """A rosbags typestore that knows ``msgtype`` as the bag defines it (to serialise)."""
        msgtype = normalize_type_name(msgtype)
        self.get(msgtype)
        return self._typestores[msgtype]

    def _load(self, msgtype: str) -> MessageDefinition:
        try:
            typesdict = self._typesdict_from_share(msgtype)
        except _NotInstalledError as missing:
            return self._from_builtin(msgtype, missing.what)
        typestore = get_typestore(Stores.EMPTY)
        typestore.register(typesdict)
        self._typestores[msgtype] = typestore
        text, _ = typestore.generate_msgdef(msgtype, ros_version=2)
        rihs01 = typestore.hash_rihs01(msgtype)
        expected = self._rosidl_hash(msgtype)
        if expected is not None and expected != rihs01:
            raise MessageDefinitionError(
                f"{msgtype}: the hash of the installed .msg definition ({rihs01}) differs from "
                f"the one rosidl generated ({expected}); the package installation is inconsistent"
            )
        return MessageDefinition(msgtype, text, rihs01)

    def _typesdict_from_share(self, msgtype: str) -> dict[str, Any]:
        """Parse the .msg file of ``msgtype`` and, transitively, of every type it uses."""
        typesdict: dict[str, Any] = {}
        pending = [msgtype]
        while pending:
            name = pending.pop()
            if name in typesdict:
                continue
            parsed = get_types_from_msg(self._msg_file(name).read_text(), name)
            typesdict.update(parsed)
            for _, fields in parsed.values():
                pending.extend(dep for dep in _referenced_types(fields) if dep not in typesdict)
        return typesdict

    def _msg_file(self, msgtype: str) -> Path:
        package, _, name = msgtype.split("/")
        share = self._share_directory(package)
        path = share / "msg" / f"{name}.msg" if share is not None else None
        if path is None or not path.is_file():
            raise _NotInstalledError(f"{package}/msg/{name}.msg")
        return path

    def _rosidl_hash(self, msgtype: str) -> str | None:
        package, _, name = msgtype.split("/")
        share = self._share_directory(package)
        description = share / "msg" / f"{name}.json" if share is not None else None
        if description is None or not description.is_file():
            return None
        for entry in json.loads(description.read_text()).get("type_hashes", []):
            if entry.get("type_name") == msgtype:
                return entry.get("hash_string")
        return None

    def _from_builtin(self, msgtype: str, missing: str) -> MessageDefinition:
        if self._builtin is None:
            self._builtin = get_typestore(Stores.LATEST)
        if msgtype not in self._builtin.fielddefs:
            raise MessageDefinitionError(
                f"no definition for {msgtype}: {missing} is not installed (is the package that "
                "defines it built and sourced?) and rosbags does not know the type"
            )
        text, _ = self._builtin.generate_msgdef(msgtype, ros_version=2)
        self._typestores[msgtype] = self._builtin
        return MessageDefinition(msgtype, text, self._builtin.hash_rihs01(msgtype))


class _NotInstalledError(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def normalize_type_name(msgtype: str) -> str:
    """ "pkg/msg/Name" from "pkg/msg/Name" or "pkg/Name"; raises MessageDefinitionError."""
    parts = msgtype.strip().split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or parts[1] != "msg" or not all(parts):
        raise MessageDefinitionError(
            f"{msgtype!r} is not a message type name of the form pkg/msg/Name"
        )
    return "/".join(parts)


def _referenced_types(fields: list[tuple[str, Any]]) -> Iterator[str]:
    """The message types named by the fields of one parsed definition."""
    for _, (node_type, detail) in fields:
        yield from _types_in(node_type, detail)


def _types_in(node_type: Nodetype, detail: Any) -> Iterator[str]:
    if node_type == Nodetype.NAME:
        yield detail
    elif node_type in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        (inner_type, inner_detail), _ = detail
        yield from _types_in(inner_type, inner_detail)
