"""Message types for reading bags: the bag's own definitions first, then fallbacks.

rosbags' ``AnyReader`` registers the definitions a bag stores (the MCAP schema records, the
sqlite3 ``message_definitions`` table of Iron and later) and checks their type hashes. Bags
without them (sqlite3 bags of Humble and older) fall back to:

1. the ``.msg`` files of installed interface packages (``share/<pkg>/msg`` on every prefix of
   ``AMENT_PREFIX_PATH``), which is how ``dp_msgs/msg/EpisodeEvent`` is found;
2. the definitions built into rosbags for the latest ROS 2 release (common_interfaces).

No rclpy: the ament index is read as plain directories.
"""

from __future__ import annotations

import os
from pathlib import Path

from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore


def fallback_typestore() -> Typestore:
    """rosbags' latest ROS 2 types; installed packages' definitions are added on demand."""
    return get_typestore(Stores.LATEST)


def installed_msg_file(msgtype: str, prefixes: str | None = None) -> Path | None:
    """``share/<pkg>/msg/<Name>.msg`` of ``pkg/msg/Name`` on AMENT_PREFIX_PATH, or None."""
    package, _, name = msgtype.split("/")
    search = prefixes if prefixes is not None else os.environ.get("AMENT_PREFIX_PATH", "")
    for prefix in filter(None, search.split(os.pathsep)):
        candidate = Path(prefix) / "share" / package / "msg" / f"{name}.msg"
        if candidate.is_file():
            return candidate
    return None


def register_missing_types(
    typestore: Typestore, msgtypes: set[str], fallback: Typestore | None = None
) -> list[str]:
    """Register in ``typestore`` every type of ``msgtypes`` (and its fields' types) it lacks.

    Returns the types that could not be found anywhere (empty when all are known now).
    """
    fallback = fallback or fallback_typestore()
    missing: list[str] = []
    found: dict = {}
    pending = sorted(msgtypes)
    seen: set[str] = set()
    while pending:
        msgtype = pending.pop()
        if msgtype in seen:
            continue
        seen.add(msgtype)
        if msgtype in typestore.fielddefs or msgtype in found:
            continue
        msg_file = installed_msg_file(msgtype)
        if msg_file is not None:
            typesdict = get_types_from_msg(msg_file.read_text(encoding="utf-8"), msgtype)
        elif msgtype in fallback.fielddefs:
            typesdict = {msgtype: fallback.fielddefs[msgtype]}
        else:
            missing.append(msgtype)
            continue
        for _, fields in typesdict.values():
            pending.extend(_field_types(fields))
        found.update(typesdict)
    if found:
        # One registration once every dependency is known: rosbags resolves field types then.
        typestore.register(found)
    return missing


def _field_types(fields: list) -> list[str]:
    names = []
    for _, (node_type, detail) in fields:
        if node_type in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            (node_type, detail), _ = detail
        if node_type == Nodetype.NAME:
            names.append(detail)
    return names


def has_header(typestore: Typestore, msgtype: str) -> bool:
    """Whether the message's first field is a ``std_msgs/msg/Header`` called ``header``."""
    fields = typestore.fielddefs[msgtype][1]
    return bool(fields) and fields[0][0] == "header" and fields[0][1][1] == "std_msgs/msg/Header"
