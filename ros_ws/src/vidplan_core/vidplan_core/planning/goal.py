"""What an instruction asks of the planner, read from its words: the direction an object should move in (the
scorer's push-progress term, :class:`~vidplan_core.planning.scoring.ScoreConfig` ``direction_weight``), whether
the task is one of contact without a grasp (touch, push: the proposals' closed gripper,
:class:`~vidplan_core.planning.session.ProposalConfig` ``contact_closed``) and where a put's object goes (its carry
phase, ``ScoreConfig.carry_height_m``).

Directions are unit vectors in the robot base frame (``panda_link0``: +x away from the robot, +y the robot's left,
+z up), the frame the simulated tasks and DROID's end-effector actions use. "Left"/"right" are the *robot's*: an
operator facing the robot says the opposite. An instruction without a direction phrase has none, and the term is
then off for it (touch, put, free-form instructions)."""

from __future__ import annotations

import re

import numpy as np

__all__ = ["CONTACT_VERBS", "DIRECTION_PHRASES", "PLACE_VERBS", "contact_instruction", "instruction_destination",
           "instruction_direction"]

#: phrase (matched as whole words, case-insensitive, at the end of a clause) → base-frame unit vector
DIRECTION_PHRASES: dict[str, tuple[float, float, float]] = {
    "to the left": (0.0, 1.0, 0.0),
    "to the right": (0.0, -1.0, 0.0),
    "away from the robot": (1.0, 0.0, 0.0),
    "forward": (1.0, 0.0, 0.0),
    "towards the robot": (-1.0, 0.0, 0.0),
    "toward the robot": (-1.0, 0.0, 0.0),
    "back": (-1.0, 0.0, 0.0),
}

#: verbs that ask for contact without a grasp; the instruction must start with one (after an optional "please")
CONTACT_VERBS: tuple[str, ...] = ("touch", "tap", "poke", "push", "nudge")

#: verbs that ask for an object to be carried somewhere; the instruction must start with one
PLACE_VERBS: tuple[str, ...] = ("put", "place", "drop", "move")

_VERB = re.compile(r"^\s*(?:please\s*,?\s+)?(" + "|".join(CONTACT_VERBS) + r")\b", re.IGNORECASE)

_PATTERN = re.compile(r"\b(" + "|".join(sorted(map(re.escape, DIRECTION_PHRASES), key=len, reverse=True))
                      + r")\s*[.!]?\s*$", re.IGNORECASE)


# "put the red cube in the bowl", "place the ball into the green bowl.", "pick up the cube and put it on the plate"
_DESTINATION = re.compile(r"^\s*(?:please\s*,?\s+)?(?:pick up\b.*?\band\s+)?(?:" + "|".join(PLACE_VERBS)
                          + r")\b.*?\b(?:into|in|onto|on|inside)\s+((?:the|a|an)\s+[a-z][a-z ]*?)\s*[.!]?\s*$",
                          re.IGNORECASE)


def instruction_destination(instruction: str) -> str | None:
    """The noun phrase of where ``instruction`` asks an object to be put, or None: "put the red cube in the bowl" →
    "the bowl" (lower case). Only an instruction that starts with one of :data:`PLACE_VERBS` (after an optional
    "please" or "pick up … and") and ends with the destination counts, so "touch the cube in the bowl" has none."""
    m = _DESTINATION.match(instruction.strip())
    return None if m is None else m.group(1).lower()


def instruction_direction(instruction: str) -> np.ndarray | None:
    """(3,) unit vector in the base frame that ``instruction`` asks the object to move along, or None.

    Only a direction phrase that ends the instruction counts ("push the red cube to the left" → +y), so an object
    described by its place ("touch the cube on the left side") is not read as a motion."""
    m = _PATTERN.search(instruction.strip())
    if m is None:
        return None
    return np.asarray(DIRECTION_PHRASES[m.group(1).lower()], np.float64)


def contact_instruction(instruction: str) -> bool:
    """Whether ``instruction`` asks for contact without a grasp: it starts with one of :data:`CONTACT_VERBS`
    ("touch the red cube", "Please push the ball to the left"). Pick/put and free-form instructions are not."""
    return _VERB.match(instruction) is not None
