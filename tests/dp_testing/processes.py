"""Nodes under test as real operating-system processes, always cleaned up.

Every process starts in a session (and so a process group) of its own, so that stopping it
also stops whatever it spawned, and with a parent-death signal, so that it dies with the test
run even when pytest itself is killed. Stopping escalates SIGINT -> SIGTERM -> SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# util-linux's setpriv sets the parent-death signal before it executes the node, so a SIGKILL of
# the test runner reaches the node too. (A preexec_fn would do the same but is unsafe in a
# process that runs threads, as the test process does with its rclpy executor.)
_SETPRIV = shutil.which("setpriv")
_DIE_WITH_PARENT = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []


@dataclass
class NodeProcess:
    """One started process, its log file and how to stop it."""

    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path
    _log_file: object = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_output(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in the process output; False on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if not self.is_running():
                return text in self.output()
            time.sleep(0.05)
        return False

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the whole process group (the node and anything it spawned)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def wait(self, timeout: float) -> int:
        """Wait for exit and return the exit status; raises TimeoutExpired."""
        return self.popen.wait(timeout=timeout)

    def stop(self, grace_s: float = 10.0) -> int:
        """Stop the process group: SIGINT, then SIGTERM, then SIGKILL. Returns the exit status."""
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 3.0)):
            if not self.is_running():
                break
            self.send_signal(sig)
            try:
                self.popen.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        if self.is_running():
            self.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=5.0)
        # The group may still hold children that ignored the signals sent to the leader.
        self.send_signal(signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
        return self.popen.returncode


class ProcessGraph:
    """Starts processes for one test and stops every one of them at the end, pass or fail."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env)
        self.processes: list[NodeProcess] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        extra_env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> NodeProcess:
        """Start ``argv`` (a list, never a shell string) with its output in ``<name>.log``."""
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed in NodeProcess.stop
        env = {**self.env, **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        popen = subprocess.Popen(
            [*_DIE_WITH_PARENT, *argv],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        process = NodeProcess(name, list(argv), popen, log_path, log_file)
        self.processes.append(process)
        return process

    def start_python_module(
        self,
        name: str,
        module: str,
        args: Sequence[str] = (),
        parameters: Mapping[str, object] | None = None,
        remappings: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> NodeProcess:
        """Start ``python -m module args --ros-args -r __node:=name -p k:=v -r from:=to``."""
        argv = [sys.executable, "-m", module, *args, "--ros-args", "-r", f"__node:={name}"]
        for key, value in (parameters or {}).items():
            argv += ["-p", f"{key}:={_parameter_text(value)}"]
        for source, target in (remappings or {}).items():
            argv += ["-r", f"{source}:={target}"]
        return self.start(name, argv, extra_env)

    def stop_all(self) -> dict[str, int]:
        """Stop every process, most recent first; returns each one's exit status."""
        statuses = {}
        for process in reversed(self.processes):
            statuses[process.name] = process.stop()
        return statuses

    def report(self) -> str:
        """The output of every process, for a failing test's report."""
        parts = []
        for process in self.processes:
            parts.append(f"----- {process.name} (pid {process.pid}) {' '.join(process.argv)}")
            parts.append(process.output()[-4000:])
        return "\n".join(parts)


def _parameter_text(value: object) -> str:
    """A parameter value in the syntax of ``--ros-args -p`` (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_parameter_text(item) for item in value) + "]"
    if isinstance(value, str):
        return value if value else "''"
    return str(value)
