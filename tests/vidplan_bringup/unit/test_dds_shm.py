"""vidplan_bringup.dds_shm (and ``vidplan shm-clean``) removes only the shared-memory segments of dead Fast DDS
participants."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest
from typer.testing import CliRunner

from vidplan_bringup.dds_shm import fastdds_files, remove_zombie_segments

pytestmark = pytest.mark.unit


def _segments(tmp_path):
    """Files of five participants: two dead (lock free), alive (locked: hold the returned fd), one being created
    (its lock is taken 0.1 s from now, by a thread: hold the returned thread's fd until it ends) and one without a
    lock file; ports are never touched."""
    for name in ("fastdds_dead", "fastdds_busy", "fastdds_alive", "fastdds_new"):
        (tmp_path / name).write_bytes(b"\0" * 1024)
        (tmp_path / f"{name}_el").write_bytes(b"")
    (tmp_path / "fastdds_nolock").write_bytes(b"\0")  # no lock file: not known to be a segment of a dead process
    (tmp_path / "fastdds_port7411").write_bytes(b"\0")
    fd = os.open(tmp_path / "fastdds_alive_el", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a living participant holds
    late = os.open(tmp_path / "fastdds_new_el", os.O_RDWR)
    t = threading.Timer(0.1, fcntl.flock, (late, fcntl.LOCK_EX | fcntl.LOCK_NB))  # locks between the two checks
    t.start()
    return fd, late, t


def test_only_segments_unlocked_at_both_checks_are_removed(tmp_path):
    fd, late, t = _segments(tmp_path)
    try:
        before = fastdds_files(tmp_path)
        assert remove_zombie_segments(before, shm=tmp_path) == (2, 2048)
    finally:
        t.join()
        os.close(fd)
        os.close(late)
    assert fastdds_files(tmp_path) == before - {"fastdds_dead", "fastdds_dead_el", "fastdds_busy", "fastdds_busy_el"}


def test_shm_clean_command_dry_run_then_removes_the_dead_only(tmp_path):
    from vidplan_app.cli import app

    fd, late, t = _segments(tmp_path)
    try:
        before = fastdds_files(tmp_path)
        res = CliRunner().invoke(app, ["shm-clean", "--dir", str(tmp_path), "--dry-run"])
        assert res.exit_code == 0 and "would remove 2 " in res.output, res.output
        assert fastdds_files(tmp_path) == before
        res = CliRunner().invoke(app, ["shm-clean", "--dir", str(tmp_path)])
        assert res.exit_code == 0 and "removed 2 " in res.output, res.output
        assert fastdds_files(tmp_path) == before - {"fastdds_dead", "fastdds_dead_el", "fastdds_busy",
                                                     "fastdds_busy_el"}
    finally:
        t.join()
        os.close(fd)
        os.close(late)
    res = CliRunner().invoke(app, ["shm-clean", "--dir", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "missing" in res.output, res.output
