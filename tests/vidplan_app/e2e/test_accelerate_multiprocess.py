"""Multi-process training as a cluster runs it: `accelerate launch --num_processes 2` on CPU (gloo, loopback), a few
steps of the tiny autoencoder on a LeRobot dataset read in place, a checkpoint, and a resume across both processes.

On a machine without a GPU accelerate needs ``--multi_gpu`` to start its torchrun launcher (the flag only selects the
launcher; the processes run on CPU with gloo) and ``Accelerator(cpu=True)`` inside — without it every process
believed it was alone and both wrote the same checkpoints (the bug this test caught)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from lerobot_fixture import write_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path: Path, data: Path, steps: int, resume: bool) -> subprocess.CompletedProcess:
    accelerate = shutil.which("accelerate")
    vidplan = shutil.which("vidplan")
    if accelerate is None or vidplan is None:
        pytest.fail("accelerate / vidplan not on PATH: source scripts/env.sh")
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(_free_port()), vidplan, "train", "vae", "--config", "tiny-vae", "--data",
           str(data), "--out", str(tmp_path / "vae"), "--max-steps", str(steps), "--set", "train.progress=false",
           "--set", "data.lerobot.val_fraction=0.25", *(["--resume"] if resume else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


def test_two_processes_train_checkpoint_and_resume(tmp_path):
    data = write_dataset(tmp_path / "lerobot", "v3.0", (31, 25, 19, 22), success=(True, False, True, True))
    first = _launch(tmp_path, data, 4, resume=False)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # the main process reports once; both processes' random states are in every checkpoint
    assert first.stdout.count("trained vae for 4 steps") == 1, first.stdout
    ck = tmp_path / "vae" / "checkpoints"
    for step in ("step_0000002", "step_0000004"):
        assert {p.name for p in (ck / step).glob("random_states_*.pkl")} == {"random_states_0.pkl",
                                                                             "random_states_1.pkl"}
    second = _launch(tmp_path, data, 8, resume=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("trained vae for 8 steps") == 1, second.stdout
    assert sorted(p.name for p in ck.iterdir()) == ["step_0000006", "step_0000008"]  # keep_checkpoints: 2
    rows = (tmp_path / "vae" / "logs" / "metrics.csv").read_text().splitlines()
    steps = [int(r.split(",")[0]) for r in rows[1:] if ",train,loss," in r]
    assert steps == [2, 4, 6, 8]  # resumed at 4, not restarted
    assert (tmp_path / "vae" / "final" / "config.json").is_file()
