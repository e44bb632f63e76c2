"""Task instructions (parse ↔ generate) and success predicates of the simulated scene."""

from __future__ import annotations

import numpy as np
import pytest

from vidplan_sim.tasks import Task, TaskState, evaluate_task, parse_instruction, sample_task

COLOURS = ["red", "green", "blue", "yellow", "orange", "purple"]
SHAPES = ["cube", "cylinder", "ball"]


def test_instructions_round_trip():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        t = sample_task(rng, COLOURS, SHAPES)
        assert parse_instruction(t.instruction, COLOURS, SHAPES) == t
        seen.add(t.kind)
    assert seen == {"put", "touch", "push"}
    assert parse_instruction("  Put the RED cube in the bowl. ") == Task("put", "red", "cube")
    assert Task("push", "blue", "ball", "right").instruction == "push the blue ball to the right"
    assert Task("touch", "green", "cylinder").object_name == "green_cylinder"


@pytest.mark.parametrize("text, match", [
    ("pick up the red cube", "cannot parse instruction"),
    ("push the red cube to the front", "cannot parse instruction"),
    ("touch the magenta cube", "unknown colour 'magenta'"),
    ("touch the red pyramid", "unknown object 'pyramid'"),
])
def test_bad_instructions(text, match):
    with pytest.raises(ValueError, match=match):
        parse_instruction(text, COLOURS, SHAPES)


def test_task_needs_direction_only_for_push():
    with pytest.raises(ValueError, match="direction"):
        Task("push", "red", "cube")
    with pytest.raises(ValueError, match="direction"):
        Task("touch", "red", "cube", "left")


def _state(**kw):
    base = dict(target_pos=np.array([0.5, 0.0, 0.02]), target_start=np.array([0.5, 0.0, 0.02]), target_radius=0.02,
                bowl_pos=np.array([0.5, 0.2, 0.0]), bowl_radius=0.075, bowl_height=0.045, touched=False, held=False,
                push_distance=0.08)
    base.update(kw)
    return TaskState(**base)


def test_put_predicate():
    t = Task("put", "red", "cube")
    assert not evaluate_task(t, _state())[0]
    assert evaluate_task(t, _state(target_pos=np.array([0.52, 0.19, 0.026])))[0]
    assert not evaluate_task(t, _state(target_pos=np.array([0.52, 0.19, 0.026]), held=True))[0]
    assert not evaluate_task(t, _state(target_pos=np.array([0.5, 0.2, 0.2])))[0]  # above the bowl, not in it
    assert not evaluate_task(t, _state(target_pos=np.array([0.5, 0.28, 0.02])))[0]  # beside the ring


def test_touch_and_push_predicates():
    assert evaluate_task(Task("touch", "red", "cube"), _state(touched=True))[0]
    assert not evaluate_task(Task("touch", "red", "cube"), _state())[0]
    left = Task("push", "red", "cube", "left")
    right = Task("push", "red", "cube", "right")
    moved = _state(target_pos=np.array([0.5, 0.09, 0.02]))
    assert evaluate_task(left, moved)[0] and not evaluate_task(right, moved)[0]
    assert not evaluate_task(left, _state(target_pos=np.array([0.5, 0.05, 0.02])))[0]  # not far enough
    assert not evaluate_task(left, _state(target_pos=np.array([0.5, 0.09, 0.10])))[0]  # lifted, not pushed
    ok, why = evaluate_task(right, _state(target_pos=np.array([0.5, -0.1, 0.02])))
    assert ok and "10.0 cm to the right" in why


def _put_state(target=(0.60, 0.05, 0.025)) -> TaskState:
    t = np.array(target)
    return TaskState(target_pos=t, target_start=t.copy(), target_radius=0.02, bowl_pos=np.array([0.45, -0.2, 0.0]),
                     bowl_radius=0.075, bowl_height=0.04, touched=False, held=False, push_distance=0.05)


def test_privileged_put_reward_approaches_open_and_closes_only_at_the_object():
    """Before a grasp, the put reward rises monotonically as an open hand approaches the object (through the grasp
    ball of 1.5 cm too), a closed hand is worth more than an open one only inside that ball, and a grasp (held) is
    worth more than anything before it. It once charged an open hand inside the ball: the greedy oracle planner, whose
    proposals move or close but never both, parked 2-3 cm beside the object."""
    from vidplan_sim.privileged import PrivilegedReward, PrivilegedState

    r, task, ts = PrivilegedReward(), Task("put", "green", "cylinder"), _put_state()
    # along +x at the object's height, from 6 cm short of its centre to the centre
    xs = np.linspace(0.54, 0.60, 61)
    open_scores = [r(task, PrivilegedState(np.array([x, 0.05, 0.03]), 0.0, ts)) for x in xs]
    assert np.all(np.diff(open_scores) > 0), np.round(open_scores, 4)
    far, near = np.array([0.57, 0.05, 0.03]), np.array([0.595, 0.05, 0.03])
    assert r(task, PrivilegedState(far, 1.0, ts)) < r(task, PrivilegedState(far, 0.0, ts))
    assert r(task, PrivilegedState(near, 1.0, ts)) > r(task, PrivilegedState(near, 0.0, ts))
    held = TaskState(**{**ts.__dict__, "held": True})
    assert r(task, PrivilegedState(near, 1.0, held)) > r(task, PrivilegedState(near, 1.0, ts)) + 0.5


def test_privileged_put_reward_carries_closed_towards_the_bowl_and_opens_only_over_it():
    """While the object is held, the put reward rises monotonically as a closed hand carries it towards the bowl (into
    the release zone, half the bowl's radius, too), and an open hand is worth more than a closed one only over the
    bowl. It once charged a closed hand over the bowl: a carry stopped 3.9 cm from the bowl's centre."""
    from vidplan_sim.privileged import PrivilegedReward, PrivilegedState

    r, task = PrivilegedReward(), Task("put", "green", "cylinder")
    bowl = np.array([0.45, -0.2, 0.0])

    def held_at(x: float) -> TaskState:
        st = _put_state((x, -0.2, 0.12))
        return TaskState(**{**st.__dict__, "target_start": np.array([0.6, 0.05, 0.025]), "held": True,
                            "bowl_pos": bowl})

    xs = np.linspace(0.60, 0.45, 61)  # from 15 cm to 0 cm from the bowl centre
    closed = [r(task, PrivilegedState(np.array([x, -0.2, 0.125]), 1.0, held_at(x))) for x in xs]
    assert np.all(np.diff(closed) > 0), np.round(closed, 4)
    far, over = held_at(0.55), held_at(0.46)  # 10 cm and 1 cm from the centre (inner radius 7.5 cm)
    tcp = np.array([0.5, -0.2, 0.125])
    assert r(task, PrivilegedState(tcp, 0.0, far)) < r(task, PrivilegedState(tcp, 1.0, far))
    assert r(task, PrivilegedState(tcp, 0.0, over)) > r(task, PrivilegedState(tcp, 1.0, over))


def test_privileged_put_reward_ranks_the_object_released_in_the_bowl_above_everything():
    """An object at rest in the bowl, released (neither held nor lifted), scores above any carry: it once fell to the
    pre-grasp branch (scored as a TCP 12 cm from the object), so opening over the bowl lost to holding on."""
    from vidplan_sim.privileged import PrivilegedReward, PrivilegedState

    r, task = PrivilegedReward(), Task("put", "green", "cylinder")
    bowl = np.array([0.45, -0.2, 0.0])
    start = _put_state((0.6, 0.05, 0.025))
    in_bowl = TaskState(**{**start.__dict__, "target_pos": np.array([0.45, -0.2, 0.025]), "bowl_pos": bowl})
    assert evaluate_task(task, in_bowl)[0]
    held_over = TaskState(**{**in_bowl.__dict__, "target_pos": np.array([0.45, -0.2, 0.13]), "held": True})
    tcp_high = np.array([0.45, -0.2, 0.14])
    best_carry = max(r(task, PrivilegedState(tcp_high, g, held_over)) for g in (0.0, 1.0))
    assert r(task, PrivilegedState(tcp_high, 0.0, in_bowl)) > best_carry
