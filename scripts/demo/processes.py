"""Child processes of the demo: one log file each, their own session, always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO


class StageError(RuntimeError):
    """A stage of the demo failed; the message names the stage and the log to read."""


@dataclass
class Process:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    log_file: IO[bytes]

    def running(self) -> bool:
        return self.popen.poll() is None

    def _signal_group(self, sig: signal.Signals) -> None:
        # Each child leads its own process group, so a node's helpers are signalled too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, grace_s: float = 10.0) -> int:
        """SIGINT (a clean ROS shutdown: bags are finished), then SIGTERM, then SIGKILL."""
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 3.0)):
            if self.popen.poll() is not None:
                break
            self._signal_group(sig)
            try:
                self.popen.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        if self.popen.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.popen.wait()
        self.log_file.close()
        return self.popen.returncode


class ProcessManager:
    """Starts processes with logs under ``log_dir``; ``with`` stops all of them, newest first."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.processes: list[Process] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: Sequence[str]) -> Process:
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("wb")
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            # Own session: a Ctrl-C in the terminal reaches the demo only, which then stops
            # its children in order (the recorder after the robot it records).
            start_new_session=True,
        )
        process = Process(name, list(argv), log_path, popen, log_file)
        self.processes.append(process)
        return process

    def start_node(
        self, name: str, module: str, parameters: Mapping[str, object] | None = None
    ) -> Process:
        argv = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
        for key, value in (parameters or {}).items():
            argv += ["-p", f"{key}:={parameter_text(value)}"]
        return self.start(name, argv)

    def check_alive(self, stage: str) -> None:
        for process in self.processes:
            if not process.running():
                raise StageError(
                    f"{stage}: {process.name} exited with status {process.popen.returncode}; "
                    f"see {process.log_path}"
                )

    def stop_all(self) -> None:
        while self.processes:
            self.processes.pop().stop()

    def __enter__(self) -> ProcessManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()


def run_to_completion(
    stage: str, name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None
) -> Path:
    """Runs a command to its end, its output teed to a log; raises StageError on failure."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ if env is None else env),
            start_new_session=True,
        )
        process = Process(name, list(argv), log_path, popen, log_file)
        try:
            assert popen.stdout is not None
            for line in iter(popen.stdout.readline, b""):
                log_file.write(line)
                log_file.flush()
                # Progress bars redraw with \r; only whole lines go to the terminal.
                text = line.decode(errors="replace").rstrip()
                if text and "\r" not in text:
                    print(f"  [{name}] {text}", flush=True)
            status = popen.wait()
        except BaseException:
            process.stop(grace_s=5.0)
            raise
    if status != 0:
        raise StageError(f"{stage}: {name} exited with status {status}; see {log_path}")
    return log_path


def wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return False


def parameter_text(value: object) -> str:
    """A value in the YAML syntax of ``--ros-args -p``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(parameter_text(item) for item in value) + "]"
    if isinstance(value, str):
        return value if value else "''"
    return str(value)
