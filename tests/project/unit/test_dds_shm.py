"""tests/dds_shm.py removes only the shared-memory segments of dead Fast DDS participants."""

from __future__ import annotations

import fcntl
import os
import time

import pytest
from dds_shm import fastdds_files, remove_zombie_segments

pytestmark = pytest.mark.unit


def test_only_old_unlocked_segments_are_removed(tmp_path):
    old = time.time() - 60
    for name in ("fastdds_dead", "fastdds_alive", "fastdds_new"):
        (tmp_path / name).write_bytes(b"\0" * 1024)
        (tmp_path / f"{name}_el").write_bytes(b"")
    for name in ("fastdds_dead", "fastdds_alive"):
        for f in (name, f"{name}_el"):
            os.utime(tmp_path / f, (old, old))
    (tmp_path / "fastdds_nolock").write_bytes(b"\0")  # no lock file: not known to be a segment of a dead process
    os.utime(tmp_path / "fastdds_nolock", (old, old))
    fd = os.open(tmp_path / "fastdds_alive_el", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a living participant holds
    try:
        before = fastdds_files(tmp_path)
        assert remove_zombie_segments(before, shm=tmp_path) == (1, 1024)
    finally:
        os.close(fd)
    assert fastdds_files(tmp_path) == before - {"fastdds_dead", "fastdds_dead_el"}
