"""PlannerModels: loading a planner model directory, and model/config mismatches as clear start-up errors."""

from __future__ import annotations

import pytest
import torch

from vidplan_core.runtime.base import BackendError
from vidplan_core.runtime.bundle import PlannerModels, random_planner_models
from vidplan_core.runtime.torch_backend import TorchBackend


def test_load_model_directory_and_mismatches(tmp_path):
    torch.set_num_threads(1)
    m = random_planner_models("tiny", seed=0)
    m.suite.save(tmp_path)
    m.scorer.model.save_pretrained(tmp_path / "semantic")
    m.scorer.tokenizer.save_pretrained(tmp_path / "semantic")
    loaded = PlannerModels.load(tmp_path)
    assert loaded.horizon == 3 and loaded.num_history == 2 and loaded.uses_text
    sd0, sd1 = m.suite.flow_map.state_dict(), loaded.suite.flow_map.state_dict()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0)

    with pytest.raises(BackendError, match=r"semantic model directory .* does not exist"):
        PlannerModels.load(tmp_path, semantic_dir=tmp_path / "nope")
    with pytest.raises(BackendError, match="does not exist"):
        PlannerModels.load(tmp_path / "missing")
    # a scorer whose embedding width differs from the world model's text conditioning
    other = random_planner_models("tiny", seed=0)
    other.suite.flow_map.model.register_to_config(text_embed_dim=24)
    with pytest.raises(BackendError, match="text embeddings of width 24"):
        TorchBackend(other)
    with pytest.raises(BackendError, match="CUDA"):
        TorchBackend(m, bf16=True) if not torch.cuda.is_available() else pytest.skip("CUDA present")
