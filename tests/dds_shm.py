"""Fast DDS's shared-memory files left behind by killed node processes.

Every Fast DDS participant (one per ROS process here) creates a segment ``/dev/shm/fastdds_<id>`` for the data it
sends (8 MiB with our loopback profile) and holds an exclusive ``flock`` on ``fastdds_<id>_el`` while it lives. A
process that exits cleanly removes both; one killed with SIGKILL, as the fault-injection tests do on purpose, leaves
them, and /dev/shm is memory. A segment whose lock nobody holds belongs to no living process (the same test as
Fast DDS's own ``fastdds shm clean``).
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


def remove_zombie_segments(candidates: set[str], min_age_s: float = 10.0, shm: Path = SHM) -> tuple[int, int]:
    """Remove those of ``candidates`` (names from :func:`fastdds_files`: pass only files this test run created) that
    are segments of dead participants: lock file present, lock free, both older than ``min_age_s`` (a participant
    being created has not locked yet). Returns (segments removed, bytes freed)."""
    removed = freed = 0
    now = time.time()
    for name in sorted(candidates):
        if name.endswith("_el") or "port" in name:
            continue
        seg, lock = shm / name, shm / f"{name}_el"
        try:
            old = now - max(seg.stat().st_mtime, lock.stat().st_mtime) >= min_age_s
            size = seg.stat().st_size
        except OSError:
            continue
        if old and _lock_is_free(lock):
            try:
                seg.unlink()
                lock.unlink()
            except OSError:
                continue
            removed += 1
            freed += size
    return removed, freed
