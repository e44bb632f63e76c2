"""Run a node until Ctrl-C / SIGTERM / external shutdown, the same way for every vidplan executable.

Also the parameter check every vidplan node gets: a parameter the node was given (params file, ``-p``, a profile,
a ``vidplan up NODE.PARAM:=`` override) that it does not declare is an error (exit 2 naming it and the closest
declared names), never silently ignored. And the listing mode ``vidplan up`` uses to check a profile's parameters
without starting anything (:data:`vidplan_core.parameter_listing.LIST_PARAMETERS_ENV`).

A renamed parameter keeps its old name for one release (:func:`declare_renamed`): the old name still works, with a
warning naming the new one; both names set to different values is an error naming both.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Callable

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

from vidplan_core.parameter_listing import DECLARED_PARAMETERS_TAG, LIST_PARAMETERS_ENV

__all__ = ["ParameterConflictError", "ParameterTypeError", "check_parameter", "check_parameter_overrides",
           "declare_checked", "declare_renamed", "param_value", "parameter_descriptor", "parameter_docs",
           "parameters_declared", "run_node", "unknown_parameters"]

_DOC_ENTRY = re.compile(r"^    ([a-z_][a-z0-9_]*(?: / [a-z_][a-z0-9_]*)*)(?: \([^)]*\))?((?:, [^:]*)?):(?: (.*))?$")
# further names documented on the same line: "a (float, 1.0), b (int, 2): text"
_DOC_MORE = re.compile(r", ([a-z_][a-z0-9_]*) \(")


def parameter_docs(doc: str) -> dict[str, str]:
    """Parameter name → description, read from a node module's docstring: the ``Parameters`` block whose entries are
    ``    name (type, default): text`` (continued on lines indented deeper; ``a / b / c (...)`` and
    ``a (type, default), b (type, default): text`` document several names at once). The docstring stays the one
    place a parameter is documented; descriptors and ``ros2 param describe`` show the same text."""
    out: dict[str, str] = {}
    names: list[str] = []
    for line in (doc or "").splitlines():
        m = _DOC_ENTRY.match(line)
        if m:
            names = m.group(1).split(" / ") + _DOC_MORE.findall(m.group(2))
            for n in names:
                out[n] = (m.group(3) or "").strip()
        elif names and line.startswith("        ") and line.strip():
            for n in names:
                out[n] += " " + line.strip()
        else:
            names = []
    return {k: v.strip() for k, v in out.items()}


def parameter_descriptor(name: str, default, description: str = "", *, read_only: bool = True,
                         lo: float | None = None):
    """A ``rcl_interfaces/ParameterDescriptor`` for a declared parameter: its description, read-only unless
    changing it live is safe, and the range ``[lo, ∞)`` for numbers (rclpy then refuses values outside it,
    at start-up and when set live, naming the parameter)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    d = ParameterDescriptor(name=name, description=description, read_only=read_only)
    if lo is not None and isinstance(default, bool):
        pass
    elif lo is not None and isinstance(default, int):
        d.integer_range = [IntegerRange(from_value=int(lo), to_value=2**62, step=0)]
    elif lo is not None and isinstance(default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=sys.float_info.max, step=0.0)]
    return d


_TYPE_NAMES = {bool: "bool", int: "integer", float: "double", str: "string"}


class ParameterTypeError(ValueError, ParameterException):
    """A parameter value of the wrong type. A ValueError (run_node: exit 2 with the message) and an rclpy
    ParameterException (run_node's listing mode reports it as the node rejecting its parameters)."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)  # not ParameterException's "<message>: <names>"


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def param_value(name: str, value: object, default: object) -> object:
    """``value`` of parameter ``name`` checked against the type of its ``default`` (bool, int, float, str or a list
    of floats) and returned as that type. An int is accepted for a float (`-p time_scale:=2`); None (a YAML ``~``)
    for a string reads as "". Raises :class:`ParameterTypeError` naming the parameter, the expected type and the value
    otherwise."""
    if isinstance(default, (list, tuple)):
        expected = f"a list of {len(default)} numbers"
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not all(map(_is_number, value)):
            raise ParameterTypeError(f"parameter {name} must be {expected}, got {value!r}")
        return [float(v) for v in value]
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "a bool (true/false)"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, expected = _is_number(value), "a number (double)"
    else:
        value = "" if value is None else value
        ok, expected = isinstance(value, str), "a string"
    if not ok:
        got = _TYPE_NAMES.get(type(value), type(value).__name__)
        raise ParameterTypeError(f"parameter {name} must be {expected}, got {value!r} ({got})")
    return float(value) if isinstance(default, float) else value


def check_parameter(name: str, value: object, default: object, *, choices=None, lo: float | None = None) -> object:
    """``value`` of ``name`` checked for type (:func:`param_value`), membership in ``choices`` and the lower bound
    ``lo``, returned as the default's type. Raises ValueError naming the parameter. Used at start-up and for live
    ``ros2 param set`` alike, so both refuse the same values with the same words."""
    v = param_value(name, value, default)
    if choices is not None and v not in choices:
        raise ValueError(f"parameter {name} must be one of {', '.join(map(str, choices))}, got {v!r}")
    if lo is not None and v < lo:
        raise ValueError(f"parameter {name} must be ≥ {lo}, got {v!r}")
    return v


def declare_checked(node: Node, name: str, default, description: str = "", *, read_only: bool = True,
                    choices=None, lo: float | None = None):
    """Declare ``name`` on ``node`` (the one way every vidplan node declares its parameters) and return its checked
    value (:func:`check_parameter`).

    The descriptor (:func:`parameter_descriptor`) carries the description (``ros2 param describe``), read-only unless
    a live change is safe, and the range ``[lo, ∞)``. It is dynamically typed, so that a value of the wrong type is
    named by our check instead of rclpy's InvalidParameterTypeException, and an integer is accepted for a double
    (``-p time_scale:=2``) as a user expects."""
    d = parameter_descriptor(name, default, description, read_only=read_only, lo=lo)
    d.dynamic_typing = True
    return check_parameter(name, node.declare_parameter(name, default, d).value, default, choices=choices, lo=lo)


class ParameterConflictError(ValueError, ParameterException):
    """Two names of one parameter (the new one and its deprecated old one) given different values. Like
    :class:`ParameterTypeError`: exit 2 with the message, and in listing mode the node rejecting its parameters (so
    ``vidplan up`` refuses before starting anything)."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)


# node attribute: deprecated parameter name → its new name (declare_renamed), listed in listing mode
_RENAMED = "_vidplan_renamed_parameters"


def declare_renamed(node: Node, name: str, old_name: str, default, description: str = "", *,
                    read_only: bool = True, choices=None, lo: float | None = None):
    """Declare parameter ``name`` and its deprecated old name ``old_name`` (removed in the next release), both with
    ``default``, and return the value in force (checked as :func:`declare_checked` checks it).

    That is ``name``'s value, unless ``old_name`` is set to a value other than the default: then the old name's,
    with a warning naming ``name`` (a params file that restates ``name``'s default, as the shipped ones do, does not
    hide an old-name override). Both set to other values than the default, and to different ones: a
    :class:`ParameterConflictError` naming both. Listing mode reports the pair (``deprecated``), so generated
    params files leave the old name out."""
    value = declare_checked(node, name, default, description, read_only=read_only, choices=choices, lo=lo)
    old = declare_checked(node, old_name, default, f"DEPRECATED (removed in the next release): the old name of "
                          f"{name}; set {name} instead", read_only=read_only, choices=choices, lo=lo)
    renamed = getattr(node, _RENAMED, None)
    if renamed is None:
        renamed = {}
        setattr(node, _RENAMED, renamed)
    renamed[old_name] = name
    if old == default:
        return value
    if value != default and value != old:
        raise ParameterConflictError(f"parameters {name} ({value!r}) and {old_name} ({old!r}) are both set, to "
                                     f"different values: {old_name} is the deprecated old name of {name}; set only "
                                     f"{name}")
    node.get_logger().warning(f"parameter {old_name} is deprecated and will be removed in the next release; set "
                              f"{name} instead (using {old_name}'s value {old!r})")
    return old


class _ParametersDeclaredStop(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised by :func:`parameters_declared` in listing mode: stops the constructor before its start-up work."""

    def __init__(self, node: Node):
        super().__init__(node.get_name())
        self.node = node


def _listing() -> bool:
    return os.environ.get(LIST_PARAMETERS_ENV) == "1"


def _overrides(node: Node) -> list[str]:
    # rclpy keeps the parameters it received for this node (params files, -p) in _parameter_overrides, with no
    # public accessor; test_node_runner.py fails if that ever changes.
    return sorted(node._parameter_overrides)


def _declared(node: Node) -> list[str]:
    return sorted(node.list_parameters([], 0).names)  # depth 0: every declared name, dotted ones included


def unknown_parameters(node: Node) -> dict[str, list[str]]:
    """Parameters ``node`` received but does not declare, each with the closest declared names (may be empty)."""
    declared = _declared(node)
    return {name: difflib.get_close_matches(name, declared, n=3, cutoff=0.6)
            for name in _overrides(node) if name not in declared}


def check_parameter_overrides(node: Node) -> None:
    """Raise ValueError naming every parameter ``node`` was given but does not declare (a typo of a safety limit
    must not leave the default in force). Call it after the node has declared all its parameters."""
    unknown = unknown_parameters(node)
    if not unknown:
        return
    parts = [f"'{name}'" + (f" (did you mean {', '.join(close)}?)" if close else "")
             for name, close in sorted(unknown.items())]
    hint = "" if all(unknown.values()) else f"; it declares: {', '.join(_declared(node))}"
    raise ValueError(f"node '{node.get_name()}' has no parameter {'; '.join(parts)}{hint}")


def parameters_declared(node: Node) -> None:
    """Call at the end of a node constructor's ``declare_parameter`` calls, before its start-up work (models,
    simulation). Checks the parameters the node was given (:func:`check_parameter_overrides`: an unknown one fails
    before anything slow happens); in listing mode stops the constructor there, so listing a node's parameters
    loads nothing."""
    if _listing():
        raise _ParametersDeclaredStop(node)
    check_parameter_overrides(node)


def _plain(value: object) -> object:
    """A parameter value as JSON/YAML can hold it (rclpy gives array.array for numeric arrays; bytes as-is)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
        return [_plain(v) for v in value]  # type: ignore[union-attr]
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


def _print_listing(node: Node | None, error: str = "") -> None:
    info: dict[str, object] = {"node": node.get_name() if node is not None else None}
    if error:
        info["error"] = error
    else:
        names = _declared(node)
        described = node.describe_parameters(names)
        info.update(declared=names, overrides=_overrides(node),
                    values={n: _plain(node.get_parameter(n).value) for n in names},
                    descriptions={n: d.description for n, d in zip(names, described, strict=True)},
                    read_only={n: bool(d.read_only) for n, d in zip(names, described, strict=True)},
                    deprecated=dict(getattr(node, _RENAMED, {})))
    print(DECLARED_PARAMETERS_TAG + json.dumps(info), flush=True)


def run_node(factory: Callable[[], Node], args: list[str] | None = None, multithreaded: bool = False,
             num_threads: int | None = None) -> None:
    """Create the node with ``factory`` and spin it.

    rclpy shuts its context down itself on SIGINT/SIGTERM; spinning then raises ExternalShutdownException,
    which is a normal exit here. ``num_threads`` sizes the MultiThreadedExecutor (rclpy's default is the CPU
    count, only 2 on small machines; a node whose action goals wait inside callbacks needs more). A node whose
    constructor raises ValueError (bad parameters) or an rclpy ParameterException (a value of the wrong type), or
    that was given a parameter it does not declare, exits with code 2 and the message, without a traceback.

    With ``VIDPLAN_LIST_PARAMETERS=1`` in the environment the node is built (up to :func:`parameters_declared`, if
    it calls it), one line ``VIDPLAN_DECLARED_PARAMETERS {"node", "declared", "overrides", "values", "descriptions",
    "read_only", "deprecated"}`` is printed and the
    process exits 0 without spinning (a ParameterException prints ``{"node", "error"}`` and exits 2).
    """
    rclpy.init(args=args if args is not None else sys.argv)
    listing = _listing()
    node = None
    partial = False  # node stopped half-way by parameters_declared(): only the rclpy Node part is complete
    code = 0
    try:
        try:
            node = factory()
        except _ParametersDeclaredStop as stop:
            node, partial = stop.node, True
        if listing:
            _print_listing(node)
            return
        check_parameter_overrides(node)
        executor = (MultiThreadedExecutor(num_threads=num_threads) if multithreaded or num_threads
                    else SingleThreadedExecutor())
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # SIGINT/SIGTERM shut the context down while the executor was building its wait set: a normal exit
        if rclpy.ok():
            raise
    except (ValueError, ParameterException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if listing and isinstance(exc, ParameterException):
            _print_listing(node, str(exc))
        code = 2
    finally:
        if node is not None:
            if partial:
                Node.destroy_node(node)  # the subclass's own clean-up would meet attributes never set
            else:
                close = getattr(node, "close", None)
                if callable(close):
                    close()
                node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    if code:
        sys.exit(code)
