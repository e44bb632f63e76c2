"""Supervised start of a bring-up profile's nodes as processes (``vidplan up``), for machines without ``ros2 launch``.

Each node runs as ``<prefix>/lib/<package>/<executable> --ros-args -r __node:=<name> --params-file <tmp>
-r <from>:=<to> ...``, exactly what ``ros2 run`` / launch_ros would execute. Output lines are prefixed with the
node name. On SIGINT/SIGTERM every node gets SIGINT, then SIGTERM, then SIGKILL, all within
``shutdown_timeout`` seconds (5 s by default). A required node that exits stops the rest and makes
:meth:`Supervisor.run` return non-zero. A node that had to be killed (or died of a signal) leaves its Fast DDS
shared-memory segment in /dev/shm; the supervisor removes such segments of dead processes when it ends.

Before anything starts, :meth:`Supervisor.check_parameters` asks each vidplan node which parameters it declares
(the node itself, in listing mode, not a list kept here) and names every parameter of the profile or the command
line that a node does not declare.
"""

from __future__ import annotations

import difflib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from vidplan_bringup.dds_shm import fastdds_files, remove_zombie_segments
from vidplan_bringup.profiles import ResolvedNode, ros_params_file_content
from vidplan_core.parameter_listing import DECLARED_PARAMETERS_TAG, LIST_PARAMETERS_ENV

__all__ = ["MissingBuildError", "ParameterCheck", "Supervisor", "find_executable"]

_COLORS = ["36", "32", "35", "33", "34", "96", "92", "95"]


class MissingBuildError(RuntimeError):
    """The workspace (or a package/executable a profile names) is not built or not sourced."""


def find_executable(package: str, executable: str) -> Path:
    """Locate ``lib/<package>/<executable>`` in the sourced workspace through the ament index (as ``ros2 run``)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError as exc:  # pragma: no cover - ament_index_python ships with the ROS wheels
        raise MissingBuildError("ament_index_python is not installed; run `make setup`") from exc
    try:
        prefix = Path(get_package_prefix(package))
    except PackageNotFoundError as exc:
        raise MissingBuildError(
            f"package '{package}' is not in the sourced workspace (AMENT_PREFIX_PATH); run `make setup`, then "
            "`source scripts/env.sh` (or use `make up PROFILE=...`)") from exc
    exe = prefix / "lib" / package / executable
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise MissingBuildError(f"executable '{executable}' of package '{package}' not found at {exe}; "
                                "run `make setup` to rebuild the workspace")
    return exe


@dataclass
class ParameterCheck:
    """Result of :meth:`Supervisor.check_parameters`.

    Attributes:
        problems: errors (a parameter a node does not declare, a value of the wrong type), each naming node,
            parameter and where it came from; non-empty means the profile must not start.
        notes: nodes whose parameters were not checked, with the reason (not a vidplan node, or its start-up failed
            before it had declared its parameters: the real start reports that failure).
        declared: node name → the parameter names it declares (nodes that were checked).
        listings: node name → what it listed: ``values`` (each declared parameter's value with the profile's and the
            overrides' applied), ``descriptions``, ``read_only`` (nodes that were checked).
    """

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    declared: dict[str, list[str]] = field(default_factory=dict)
    listings: dict[str, dict] = field(default_factory=dict)


@dataclass
class _Proc:
    node: ResolvedNode
    cmd: list[str]
    color: str
    popen: subprocess.Popen | None = None
    tail: deque = field(default_factory=lambda: deque(maxlen=20))
    reader: threading.Thread | None = None
    restarts: int = 0


class Supervisor:
    """Start, watch and stop a set of resolved nodes.

    Args:
        nodes: nodes to start, in order.
        shutdown_timeout: seconds from the shutdown request until every process is gone (SIGKILL at the end).
        out: stream for the prefixed logs (stdout by default).
        extra_env: variables added to every node's environment.
    """

    def __init__(self, nodes: list[ResolvedNode], shutdown_timeout: float = 5.0, out: IO[str] | None = None,
                 extra_env: dict[str, str] | None = None):
        self.shutdown_timeout = shutdown_timeout
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tmpdir = tempfile.TemporaryDirectory(prefix="vidplan-up-")
        self._shm_before = fastdds_files()  # to clean up after nodes that had to be killed (see run)
        self._killed = False  # a node died of a signal or was sent SIGKILL
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", "RCUTILS_COLORIZED_OUTPUT": "0", **(extra_env or {})}
        self.procs: list[_Proc] = []
        for i, node in enumerate(nodes):
            exe = find_executable(node.package, node.executable)
            params = Path(self._tmpdir.name) / f"{node.name}.params.yaml"
            params.write_text(ros_params_file_content(node))
            cmd = [str(exe), "--ros-args", "-r", f"__node:={node.name}", "--params-file", str(params)]
            for src, dst in node.remappings.items():
                cmd += ["-r", f"{src}:={dst}"]
            self.procs.append(_Proc(node=node, cmd=cmd, color=_COLORS[i % len(_COLORS)]))
        width = max((len(p.node.name) for p in self.procs), default=4)
        self._width = width
        self._tty = hasattr(self.out, "isatty") and self.out.isatty()

    # ------------------------------------------------------------------ parameter check
    def check_parameters(self, overridden: dict[str, dict] | None = None, timeout: float = 120.0) -> ParameterCheck:
        """Compare every node's parameters (profile + overrides) with the ones the node declares.

        Each node of a ``vidplan_*`` package is started once with the same command line in listing mode
        (``VIDPLAN_LIST_PARAMETERS=1``: it builds itself up to its parameter declarations, prints them and exits;
        ROS discovery is off, so nobody sees it), all in parallel. Nodes of other packages are not checked (they
        would just start), nor a node whose start-up fails before it has declared everything (the real start
        reports that).

        Args:
            overridden: node → {param: value} given on the command line (named as such in the messages).
            timeout: seconds for all listings together; a node still running then is stopped and not checked.
        """
        overridden = overridden or {}
        env = {**self._env, LIST_PARAMETERS_ENV: "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF"}
        result = ParameterCheck()
        running: list[tuple[_Proc, subprocess.Popen]] = []
        try:
            for proc in self.procs:
                if not proc.node.package.startswith("vidplan_"):
                    result.notes.append(f"node '{proc.node.name}' ({proc.node.package}/{proc.node.executable}): "
                                        "parameters not checked (not a vidplan node)")
                    continue
                running.append((proc, subprocess.Popen(
                    proc.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    text=True, errors="replace", start_new_session=True, preexec_fn=die_with_parent)))
            deadline = time.monotonic() + timeout
            for proc, popen in running:
                try:
                    out, _ = popen.communicate(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _kill_group(popen)
                    out, _ = popen.communicate()
                    result.notes.append(f"node '{proc.node.name}': parameters not checked (listing them took longer "
                                        f"than {timeout:g} s)")
                    continue
                self._judge_listing(proc, popen.returncode, out, overridden.get(proc.node.name, {}), result)
        finally:
            for _proc, popen in running:
                if popen.poll() is None:
                    _kill_group(popen)
                    popen.wait()
        return result

    @staticmethod
    def _judge_listing(proc: _Proc, code: int, out: str, overridden: dict, result: ParameterCheck) -> None:
        node = proc.node
        where = f"node '{node.name}' ({node.package}/{node.executable})"
        info = None
        for line in out.splitlines():
            if line.startswith(DECLARED_PARAMETERS_TAG):
                try:
                    info = json.loads(line[len(DECLARED_PARAMETERS_TAG):])
                except json.JSONDecodeError:
                    info = None
        if info is not None and info.get("error"):
            result.problems.append(f"{where} rejects its parameters: {info['error']}")
            return
        if info is None or "declared" not in info:
            tail = [ln for ln in out.strip().splitlines() if not ln.startswith(DECLARED_PARAMETERS_TAG)][-3:]
            result.notes.append(f"{where}: parameters not checked (its start-up failed before it listed them: it "
                                f"{_describe_exit(code)}" + (": " + " | ".join(tail) if tail else "") + ")")
            return
        declared = list(info["declared"])
        result.declared[node.name] = declared
        result.listings[node.name] = info
        for name in sorted(node.parameters):
            if name in declared:
                continue
            close = difflib.get_close_matches(name, declared, n=3, cutoff=0.6)
            source = "command-line override" if name in overridden else f"profile nodes.{node.name}.parameters"
            result.problems.append(
                f"{node.name}.{name} ({source}): {where} has no parameter '{name}'; "
                + (f"did you mean {', '.join(close)}?" if close else f"it declares: {', '.join(declared)}"))

    # ------------------------------------------------------------------ logging
    def _emit(self, name: str, color: str, line: str) -> None:
        prefix = f"[{name:<{self._width}}]"
        if self._tty:
            prefix = f"\033[{color}m{prefix}\033[0m"
        with self._lock:
            self.out.write(f"{prefix} {line}\n")
            self.out.flush()

    def _emit_up(self, line: str) -> None:
        with self._lock:
            self.out.write(f"[vidplan up] {line}\n")
            self.out.flush()

    def _pump(self, proc: _Proc, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            proc.tail.append(line)
            self._emit(proc.node.name, proc.color, line)
        stream.close()

    # ------------------------------------------------------------------ lifecycle
    def _spawn(self, proc: _Proc) -> None:
        # Own process group per node: signals reach the node and anything it spawned, and not us.
        proc.popen = subprocess.Popen(proc.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=self._env, start_new_session=True,
                                      preexec_fn=die_with_parent)
        proc.reader = threading.Thread(target=self._pump, args=(proc, proc.popen.stdout), daemon=True)
        proc.reader.start()
        self._emit_up(f"started {proc.node.name} ({proc.node.package}/{proc.node.executable}, "
                      f"pid {proc.popen.pid})")

    def request_stop(self, *_: object) -> None:
        """Ask :meth:`run` to shut everything down (safe to call from a signal handler)."""
        self._stop.set()

    def run(self) -> int:
        """Start all nodes and supervise them until a stop request or a required node exits.

        Returns:
            0 after a requested shutdown, 1 when a required node exited.
        """
        old = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        failed: str | None = None
        try:
            for proc in self.procs:
                self._spawn(proc)
            while not self._stop.wait(0.1):
                for proc in self.procs:
                    code = proc.popen.poll() if proc.popen else None
                    if code is None:
                        continue
                    if proc.reader:
                        proc.reader.join(timeout=1.0)
                    why = _describe_exit(code)
                    self._killed |= code < 0
                    if proc.node.required:
                        failed = f"required node '{proc.node.name}' {why}"
                        self._stop.set()
                        break
                    if proc.node.respawn:
                        proc.restarts += 1
                        self._emit_up(f"node '{proc.node.name}' {why}; respawning (restart {proc.restarts})")
                        time.sleep(min(5.0, 0.5 * proc.restarts))
                        self._spawn(proc)
                    else:
                        self._emit_up(f"node '{proc.node.name}' {why}; continuing without it")
                        proc.popen = None
        finally:
            self.shutdown()
            for s, h in old.items():
                signal.signal(s, h)
            self._tmpdir.cleanup()
            self._remove_dead_segments()
        if failed:
            tail = next((p.tail for p in self.procs if failed.startswith(f"required node '{p.node.name}'")), [])
            self._emit_up(f"ERROR: {failed}; stopped all nodes.")
            if tail:
                self._emit_up("last output of that node:\n    " + "\n    ".join(tail))
            return 1
        return 0

    def _remove_dead_segments(self) -> None:
        """A node killed by a signal leaves its Fast DDS shared-memory segment (8 MiB of /dev/shm) behind: remove the
        segments that appeared while this supervisor ran and whose owner is dead (vidplan_bringup.dds_shm)."""
        if not self._killed:
            return
        n, freed = remove_zombie_segments(fastdds_files() - self._shm_before)
        if n:
            self._emit_up(f"removed {n} Fast DDS shared-memory segment(s) of killed nodes ({freed / 2**20:.0f} MiB "
                          "of /dev/shm)")

    def shutdown(self) -> None:
        """Stop every running node: SIGINT, then SIGTERM at 60 %, SIGKILL at 90 % of ``shutdown_timeout``."""
        running = [p for p in self.procs if p.popen and p.popen.poll() is None]
        if not running:
            return
        self._emit_up(f"stopping {', '.join(p.node.name for p in running)}")
        t0 = time.monotonic()
        stages = [(signal.SIGINT, 0.0), (signal.SIGTERM, 0.6), (signal.SIGKILL, 0.9)]
        for sig, frac in stages:
            while time.monotonic() - t0 < frac * self.shutdown_timeout:
                if all(p.popen.poll() is not None for p in running):
                    break
                time.sleep(0.02)
            alive = [p for p in running if p.popen.poll() is None]
            if not alive:
                break
            self._killed |= sig == signal.SIGKILL
            for p in alive:
                try:
                    os.killpg(p.popen.pid, sig)
                except ProcessLookupError:
                    pass
        for p in running:
            try:
                p.popen.wait(timeout=max(0.1, self.shutdown_timeout - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                self._emit_up(f"WARNING: {p.node.name} (pid {p.popen.pid}) did not exit")
            if p.reader:
                p.reader.join(timeout=0.5)


def die_with_parent() -> None:
    """``preexec_fn`` for children: get SIGTERM when the parent dies, even by SIGKILL (Linux PR_SET_PDEATHSIG), so a
    killed ``vidplan up`` (or ``vidplan demo``) never leaves its processes running.

    Also restores SIGINT's default action: a parent started in the background by a non-interactive shell (``cmd &``,
    nohup, some CI runners) inherits SIGINT as *ignored*, and so would every child, while SIGINT is how the
    supervisor asks a node to shut down cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _kill_group(popen: subprocess.Popen) -> None:
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
