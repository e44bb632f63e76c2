"""Fast DDS's shared-memory files left behind by killed node processes.

Every Fast DDS participant (one per ROS process here) creates a segment ``/dev/shm/fastdds_<id>`` for the data it
sends (8 MiB with our loopback profile) and holds an exclusive ``flock`` on ``fastdds_<id>_el`` while it lives. A
process that exits cleanly removes both; one killed with SIGKILL, as the fault-injection tests do on purpose, leaves
them, and /dev/shm is memory. A segment whose lock nobody holds belongs to no living process (the same test as
Fast DDS's own ``fastdds shm clean``; the PyPI ROS wheels ship no ``fastdds`` tool).

Used by ``vidplan shm-clean``, by ``vidplan up`` after it had to kill a node, and by the test suite after its
fault-injection tests. Plain file operations: no ROS import.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

__all__ = ["census", "fastdds_files", "remove_zombie_segments"]

SHM = Path("/dev/shm")


def fastdds_files(shm: Path = SHM) -> set[str]:
    """Names of Fast DDS's files in ``shm`` (/dev/shm) now (empty where there is none)."""
    return {f.name for f in shm.iterdir() if f.name.startswith("fastdds_")} if shm.is_dir() else set()


def census(shm: Path = SHM) -> str:
    """One line on Fast DDS's files in ``shm`` (count, bytes, port names), for the report of a failed wait."""
    names = fastdds_files(shm)
    size = 0
    for name in names:
        try:
            size += (shm / name).stat().st_size
        except OSError:  # removed meanwhile by its process
            pass
    ports = sorted(n for n in names if "port" in n)[:12]
    return f"{shm}: {len(names)} Fast DDS files, {size / 2**20:.0f} MiB, ports {ports}"


def _lock_is_free(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: its process lives
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def remove_zombie_segments(candidates: set[str] | None = None, settle_s: float = 0.5, shm: Path = SHM,
                           dry_run: bool = False) -> tuple[int, int]:
    """Remove those of ``candidates`` (names from :func:`fastdds_files`; None = every Fast DDS file in ``shm``) that
    are segments of dead participants: the lock file is present and nobody holds its lock, at two checks
    ``settle_s`` [s] apart (a participant being created has made the lock file but not locked it yet; ages cannot
    tell, as Fast DDS touches the lock file of a living participant every second). ``dry_run``: count them, remove
    nothing. Returns (segments removed, bytes freed)."""
    def free_segments(names) -> list[str]:
        return [n for n in names if not n.endswith("_el") and "port" not in n and _lock_is_free(shm / f"{n}_el")]

    first = free_segments(sorted(fastdds_files(shm) if candidates is None else candidates))
    if not first:
        return 0, 0
    time.sleep(settle_s)
    removed = freed = 0
    for name in free_segments(first):
        seg, lock = shm / name, shm / f"{name}_el"
        try:
            size = seg.stat().st_size
            if not dry_run:
                seg.unlink()
                lock.unlink()
        except OSError:  # gone meanwhile (its owner's own cleanup, another cleaner)
            continue
        removed += 1
        freed += size
    return removed, freed
