"""Tasks of the simulated DROID scene: instructions, parsing, sampling and success predicates.

Three task kinds, each about one target object named by colour and shape:

* ``put``   — "put the <colour> <shape> in the bowl": success when the object rests inside the bowl's ring
  (horizontal distance to the bowl centre below its inner radius minus the object's radius / 2, height below
  the rim) and the gripper no longer holds it.
* ``touch`` — "touch the <colour> <shape>": success once any robot geometry has touched the object (latched
  over the episode by :class:`vidplan_sim.env.SimEnv`).
* ``push``  — "push the <colour> <shape> to the left|right": success when the object moved at least
  ``push_distance`` along +y (left, the robot's left in panda_link0) or −y (right) from its start, still
  stands on the table and is not held.

No MuJoCo and no rclpy here: predicates take a :class:`TaskState` snapshot the environment fills in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["TASK_KINDS", "Task", "TaskState", "evaluate_task", "parse_instruction", "sample_task"]

TASK_KINDS = ("put", "touch", "push")
TaskKind = Literal["put", "touch", "push"]

_PATTERNS = {
    "put": re.compile(r"^put the (?P<colour>[a-z]+) (?P<shape>[a-z]+) in the bowl$"),
    "touch": re.compile(r"^touch the (?P<colour>[a-z]+) (?P<shape>[a-z]+)$"),
    "push": re.compile(r"^push the (?P<colour>[a-z]+) (?P<shape>[a-z]+) to the (?P<direction>left|right)$"),
}


@dataclass(frozen=True)
class Task:
    """One task about the object ``<colour> <shape>``; ``direction`` is ``left``/``right`` for pushes only."""

    kind: TaskKind
    colour: str
    shape: str
    direction: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task kind must be one of {TASK_KINDS}, got {self.kind!r}")
        if (self.kind == "push") != (self.direction in ("left", "right")):
            raise ValueError(f"push tasks need direction 'left' or 'right' and other tasks none; got kind "
                             f"{self.kind!r}, direction {self.direction!r}")

    @property
    def instruction(self) -> str:
        """The natural-language instruction (inverse of :func:`parse_instruction`)."""
        obj = f"{self.colour} {self.shape}"
        if self.kind == "put":
            return f"put the {obj} in the bowl"
        if self.kind == "touch":
            return f"touch the {obj}"
        return f"push the {obj} to the {self.direction}"

    @property
    def object_name(self) -> str:
        """Name of the target object in the scene (``<colour>_<shape>``)."""
        return f"{self.colour}_{self.shape}"

    @property
    def push_sign(self) -> float:
        """+1 for left (+y), −1 for right (−y), 0 for other tasks."""
        return {"left": 1.0, "right": -1.0}.get(self.direction or "", 0.0)


def parse_instruction(text: str, colours: list[str] | None = None, shapes: list[str] | None = None) -> Task:
    """Parse an instruction into a :class:`Task` (case and surrounding blanks ignored).

    Raises:
        ValueError: naming the instruction and the accepted forms / colours / shapes.
    """
    norm = " ".join(text.strip().lower().rstrip(".").split())
    for kind, pat in _PATTERNS.items():
        m = pat.match(norm)
        if m is None:
            continue
        task = Task(kind=kind, colour=m["colour"], shape=m["shape"], direction=m.groupdict().get("direction"))  # type: ignore[arg-type]
        if colours is not None and task.colour not in colours:
            raise ValueError(f"instruction {text!r}: unknown colour {task.colour!r}; expected one of {colours}")
        if shapes is not None and task.shape not in shapes:
            raise ValueError(f"instruction {text!r}: unknown object {task.shape!r}; expected one of {shapes}")
        return task
    raise ValueError(f"cannot parse instruction {text!r}; expected 'put the <colour> <object> in the bowl', "
                     "'touch the <colour> <object>' or 'push the <colour> <object> to the left|right'")


def sample_task(rng: np.random.Generator, colours: list[str], shapes: list[str],
                kinds: tuple[str, ...] = TASK_KINDS) -> Task:
    """Draw a task uniformly over kinds, colours, shapes (and push directions)."""
    kind = str(rng.choice(list(kinds)))
    colour = str(rng.choice(colours))
    shape = str(rng.choice(shapes))
    direction = str(rng.choice(["left", "right"])) if kind == "push" else None
    return Task(kind=kind, colour=colour, shape=shape, direction=direction)  # type: ignore[arg-type]


@dataclass
class TaskState:
    """What the predicates need, in the base frame (panda_link0) [m].

    Attributes:
        target_pos: (3,) current target object position.
        target_start: (3,) target position after the scene settled at reset.
        target_radius: horizontal radius of the target object.
        bowl_pos: (3,) bowl centre on the table.
        bowl_radius: inner radius of the bowl ring.
        bowl_height: rim height above the table.
        touched: a robot geometry touched the target at some point of the episode.
        held: the fingers are touching the target now.
        push_distance: displacement that counts as a push.
    """

    target_pos: np.ndarray
    target_start: np.ndarray
    target_radius: float
    bowl_pos: np.ndarray
    bowl_radius: float
    bowl_height: float
    touched: bool
    held: bool
    push_distance: float


def evaluate_task(task: Task, s: TaskState) -> tuple[bool, str]:
    """Success predicate: returns (success, short human-readable reason)."""
    p = np.asarray(s.target_pos, float)
    if task.kind == "put":
        d = float(np.linalg.norm(p[:2] - np.asarray(s.bowl_pos, float)[:2]))
        inside = d < s.bowl_radius - 0.5 * s.target_radius and p[2] < s.bowl_pos[2] + s.bowl_height + 0.01
        ok = inside and not s.held
        why = (f"object {d * 100:.1f} cm from the bowl centre (inner radius {s.bowl_radius * 100:.1f} cm), "
               f"z {p[2] * 100:.1f} cm{', still held' if s.held else ''}")
        return bool(ok), why
    if task.kind == "touch":
        return bool(s.touched), "touched" if s.touched else "not touched yet"
    dy = float((p[1] - s.target_start[1]) * task.push_sign)
    on_table = p[2] < s.target_start[2] + 0.02
    ok = dy >= s.push_distance and on_table and not s.held
    moved_cm = round(dy * 100, 1) + 0.0  # + 0.0: no "-0.0 cm" for a jitter of a few micrometres
    return bool(ok), (f"moved {moved_cm:.1f} cm to the {task.direction} (need {s.push_distance * 100:.1f} cm)"
                      f"{'' if on_table else ', lifted off the table'}{', still held' if s.held else ''}")
