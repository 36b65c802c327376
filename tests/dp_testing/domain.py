"""A DDS domain of its own for each test session.

Two test sessions on one machine (two CI jobs, a developer's shell beside CI) must never see
each other's nodes. Each session reserves a ``ROS_DOMAIN_ID`` with an exclusive lock file and
keeps the lock for its lifetime; discovery stays on the loopback interface.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Fast DDS derives UDP ports from the domain ID; 1..100 stays clear of the ephemeral port range
# on Linux. Domain 0 is the default that an unconfigured node on the machine would use.
FIRST_DOMAIN_ID = 1
LAST_DOMAIN_ID = 100
LOCK_DIR = Path(tempfile.gettempdir()) / "dp_ros_domains"


@dataclass
class DomainReservation:
    """A reserved domain ID; the reservation lasts while ``lock_file`` stays open."""

    domain_id: int
    lock_file: IO[str]

    def release(self) -> None:
        self.lock_file.close()


def reserve_domain(start_hint: int | None = None) -> DomainReservation:
    """Reserve a free domain ID, trying IDs from ``start_hint`` (default: derived from the pid)."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    span = LAST_DOMAIN_ID - FIRST_DOMAIN_ID + 1
    offset = (os.getpid() if start_hint is None else start_hint) % span
    for attempt in range(span):
        domain_id = FIRST_DOMAIN_ID + (offset + attempt) % span
        lock_file = open(LOCK_DIR / f"domain_{domain_id}.lock", "w")  # noqa: SIM115 - held open
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            continue
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        return DomainReservation(domain_id, lock_file)
    raise RuntimeError(
        f"all ROS domain IDs {FIRST_DOMAIN_ID}..{LAST_DOMAIN_ID} are reserved by other test "
        f"sessions (lock files in {LOCK_DIR})"
    )


def isolated_ros_environment(domain_id: int) -> dict[str, str]:
    """The environment variables that confine this session's DDS traffic to itself."""
    return {
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RMW_IMPLEMENTATION": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp"),
    }
