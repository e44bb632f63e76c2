"""vidplan_core.config.changed_settings: what a resumable job names when an output directory holds a run of other
settings (LeRobot/RLDS import, data generation, eval sim, merge_runs)."""

from __future__ import annotations

from vidplan_core.config import changed_settings


def test_changed_settings_names_every_differing_key_with_both_values():
    assert changed_settings({"size": [48, 80], "seed": 0}, {"size": [48, 80], "seed": 0}) == ""
    assert changed_settings({"size": [48, 80], "seed": 0}, {"size": [96, 160], "seed": 0}) == \
        "size: [48, 80] → [96, 160]"
    # a key that only one side has is a difference too (an import.json written before the key existed)
    assert changed_settings({"seed": 0}, {"seed": 0, "crop": True}) == "crop: None → True"
    assert changed_settings({"seed": 0, "crop": True}, {"seed": 1}) == "seed: 0 → 1, crop: True → None"
