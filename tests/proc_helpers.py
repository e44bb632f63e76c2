"""Helpers for tests that start real processes (ROS nodes, `vidplan up`) and must clean up only their own PIDs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ManagedProcess", "node_executable", "started", "wait_for"]


def node_executable(package: str, executable: str) -> str:
    """Path of a built node executable (lib/<package>/<executable>), as ``ros2 run`` would find it."""
    from ament_index_python.packages import get_package_prefix

    exe = Path(get_package_prefix(package)) / "lib" / package / executable
    if not exe.is_file():
        raise FileNotFoundError(f"{exe} not built; run `make setup`")
    return str(exe)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it returns True or ``timeout`` seconds pass; returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class ManagedProcess:
    """A child process in its own session, with output captured to a log file.

    ``stop()`` signals only this child's process group (SIGINT, then SIGTERM, then SIGKILL).
    """

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None):
        self.cmd = cmd
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        # SIGINT back to its default in the child: a test run started in the background by a non-interactive shell
        # inherits SIGINT as ignored, and the tests use SIGINT as Ctrl-C
        self.popen = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
                                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.pid = self.popen.pid

    def output(self) -> str:
        """Everything the process printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this process only (not its group)."""
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def group_alive(self) -> bool:
        """Whether any process of this child's process group still exists (the child may have exited before its own
        children did)."""
        self.popen.poll()  # reap the leader if it has exited, so a zombie leader does not count
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the whole process group — SIGINT, then SIGTERM, then SIGKILL — until none of it is left, even when
        the leader exits first; returns the leader's exit code. (10 s: longer than `vidplan up`'s own 5 s shutdown, so
        a supervisor is never killed while it is still stopping its nodes.)"""
        for sig, frac in ((signal.SIGINT, 0.5), (signal.SIGTERM, 0.3), (signal.SIGKILL, 0.2)):
            if not self.group_alive():
                break
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + timeout * frac
            while time.monotonic() < end and self.group_alive():
                time.sleep(0.05)
        code = self.popen.poll()
        self._log.close()
        return code


@contextmanager
def started(cmd: list[str], log_path: Path, **kw) -> Iterator[ManagedProcess]:
    """Context manager: start ``cmd`` and always stop it (and only it) afterwards."""
    proc = ManagedProcess(cmd, log_path, **kw)
    try:
        yield proc
    finally:
        proc.stop()


def free_port() -> int:
    """A TCP port on loopback that is free now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_healthy(port: int) -> bool:
    """True when an openpi policy server on loopback ``port`` answers its /healthz."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5) as r:
            return r.status == 200
    except OSError:
        return False

