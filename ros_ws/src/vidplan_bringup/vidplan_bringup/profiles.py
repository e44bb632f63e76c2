"""Bring-up profiles: which nodes a use (robot, sim, replay) runs, with what parameters and remappings.

One YAML profile is the single source of truth for both starters: ``vidplan up`` (supervised processes, for
machines with rclpy but no ``ros2 launch``) and the ``ros2 launch`` files in ``launch/`` (full ROS 2 installs).

Profile format::

    description: MuJoCo DROID scene + executor
    args:                          # overridable: `vidplan up sim name:=value` / `ros2 launch ... name:=value`
      use_sim_time: true
      instruction: ""
    deprecated_args:               # old arg name: its new name (a declared arg); removed in the next release
      task: instruction
    nodes:
      sim:                         # node name (also the ROS node name)
        package: vidplan_sim
        executable: sim_node
        required: true             # if it exits, everything stops and `vidplan up` exits non-zero
        parameters:
          use_sim_time: $(arg use_sim_time)   # whole-value substitution keeps the type
          robot_description: $(file urdf/fr3_droid.urdf)   # a file's text (relative: the vidplan_bringup share)
        remappings:
          /joint_states: /sim/joint_states

``$(file PATH)`` (a whole value; PATH may hold ``$(arg ...)``) is replaced by the text of the file, as launch's
``Command(['cat', ...])`` would give it: a relative PATH is looked up in the installed ``share/vidplan_bringup`` and
then in the repository root (urdf/, calibration/). A missing file is a :class:`ConfigError` naming it.

Overrides on the command line: ``ARG:=VALUE`` sets a profile arg; ``NODE.PARAM:=VALUE`` sets one node
parameter. Values are parsed as YAML scalars (``true``, ``15``, ``0.5``, ``text``). An arg override must have the
type of the arg's default (an int default takes ints, a float default ints or floats, a bool default true/false, a
text default any scalar, kept as text), else it is a :class:`ConfigError` naming the arg and the expected type.

Renamed args (``deprecated_args``, old name → new name): an override of the old name (``vidplan up sim
task:="..."``) still works for one release. It sets the new arg and :func:`resolve_profile` issues a
:class:`DeprecatedArgWarning` naming the new name (``vidplan up`` prints it). Giving both names is a
:class:`ConfigError` naming both. An old name must not be a declared arg itself, and its new name must be one.
(Shipped profiles: ``task`` → ``instruction``, the text the robot is told; a task is the manipulation task.)

Node parameters are checked against the parameters each node declares (no list is kept here): each node lists
them without starting, by the protocol of :mod:`vidplan_core.parameter_listing` (``vidplan_ros.node_runner``); see
:meth:`vidplan_bringup.supervisor.Supervisor.check_parameters`.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vidplan_core.config import ConfigError, load_yaml, validate_model
from vidplan_core.paths import share_file

__all__ = [
    "DeprecatedArgWarning",
    "NodeSpec",
    "Profile",
    "ResolvedNode",
    "documented_params_file",
    "find_profile",
    "load_profile",
    "parse_overrides",
    "resolve_profile",
    "ros_params_file_content",
]

_ARG_RE = re.compile(r"\$\(arg ([A-Za-z_][A-Za-z0-9_]*)\)")
_FILE_RE = re.compile(r"\$\(file ([^()]+)\)")
_NAME_RE = r"^[A-Za-z][A-Za-z0-9_]*$"
ParamValue = bool | int | float | str | list[bool] | list[int] | list[float] | list[str]


class NodeSpec(BaseModel):
    """One node of a profile."""

    model_config = ConfigDict(extra="forbid")

    package: str = Field(pattern=_NAME_RE, description="ROS package that installs the executable")
    executable: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", description="executable in lib/<package>")
    required: bool = Field(False, description="stop everything (non-zero exit) when this node exits")
    respawn: bool = Field(False, description="restart the node when it exits (ignored for required nodes)")
    parameters: dict[str, Any] = Field(default_factory=dict, description="ROS parameters (name: value)")
    remappings: dict[str, str] = Field(default_factory=dict, description="topic remappings (from: to)")
    enabled: bool | str = Field(True, description="start this node (may be an $(arg ...) substitution)")


class DeprecatedArgWarning(FutureWarning):
    """A profile arg given by its deprecated old name (``deprecated_args``); the message names the new name.
    A FutureWarning, so Python shows it to users by default."""


class Profile(BaseModel):
    """A bring-up profile (see module docstring)."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    args: dict[str, Any] = Field(default_factory=dict)
    deprecated_args: dict[str, str] = Field(
        default_factory=dict, description="old arg name → its new name (a declared arg): the old name still works as "
        "an override, with a warning, until it is removed")
    nodes: dict[str, NodeSpec]

    @model_validator(mode="after")
    def _renamed_args(self) -> Profile:
        for old, new in self.deprecated_args.items():
            if new not in self.args:
                raise ValueError(f"deprecated_args: {old} → {new}: {new!r} is not a declared arg "
                                 f"(declared: {', '.join(self.args) or 'none'})")
            if old in self.args:
                raise ValueError(f"deprecated_args: {old!r} is a declared arg; an old name must not be one")
        return self

    @field_validator("nodes")
    @classmethod
    def _node_names(cls, v: dict[str, NodeSpec]) -> dict[str, NodeSpec]:
        if not v:
            raise ValueError("a profile needs at least one node")
        for name in v:
            if not re.match(_NAME_RE, name):
                raise ValueError(f"node name {name!r} is not a valid ROS node name")
        return v


class ResolvedNode(BaseModel):
    """A node with all substitutions applied, ready to start."""

    name: str
    package: str
    executable: str
    required: bool
    respawn: bool
    parameters: dict[str, Any]
    remappings: dict[str, str]


def profile_search_path() -> list[Path]:
    """Folders searched for ``NAME.yaml``: $VIDPLAN_PROFILE_PATH, the installed share folder, the source tree."""
    paths: list[Path] = []
    if os.environ.get("VIDPLAN_PROFILE_PATH"):
        paths += [Path(p) for p in os.environ["VIDPLAN_PROFILE_PATH"].split(os.pathsep) if p]
    source = Path(__file__).resolve().parents[2] / "vidplan_bringup" / "profiles"
    installed = share_file("vidplan_bringup", "profiles/sim.yaml", source / "sim.yaml").parent
    paths += [installed] + ([source] if installed != source else [])
    return paths


def find_profile(name_or_path: str) -> Path:
    """Return the YAML file for a profile given by name (``sim``) or by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not p.is_file():
            raise ConfigError(name_or_path, [("", "profile file not found")])
        return p
    for folder in profile_search_path():
        cand = folder / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    known = sorted({f.stem for d in profile_search_path() if d.is_dir() for f in d.glob("*.yaml")})
    raise ConfigError(name_or_path, [("", f"no such profile; known profiles: {', '.join(known) or 'none'}")])


def load_profile(name_or_path: str) -> tuple[Profile, Path]:
    """Load and validate a profile; errors name the file, key and reason."""
    path = find_profile(name_or_path)
    return validate_model(Profile, load_yaml(path), str(path)), path


def parse_overrides(items: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split ``key:=value`` items into profile-arg overrides and per-node parameter overrides.

    Node parameter values are parsed as YAML scalars; profile-arg values stay text here, and
    :func:`resolve_profile` reads them as the type of the arg's default (so ``instruction:=42`` stays the text
    "42").
    """
    args: dict[str, Any] = {}
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        if ":=" not in item:
            raise ConfigError("command line", [(item, "expected NAME:=VALUE or NODE.PARAM:=VALUE")])
        key, raw = item.split(":=", 1)
        if "." in key:
            node, param = key.split(".", 1)
            params.setdefault(node, {})[param] = _yaml_scalar(raw)
        else:
            args[key] = raw
    return args, params


def _yaml_scalar(raw: str) -> Any:
    if raw == "":
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _typed_arg(default: Any, value: Any) -> tuple[Any, str]:
    """``value`` (command-line text, or a Python value) as the type of the arg's ``default``: (value, "") or
    (None, what was expected)."""
    text = value if isinstance(value, str) else None
    if isinstance(default, str):
        if text is not None:
            return text, ""
        if isinstance(value, bool):
            return str(value).lower(), ""
        if isinstance(value, int | float):
            return str(value), ""
        return None, "text"
    if text is not None:
        value = _yaml_scalar(text)
    if default is None:  # an arg without a default takes any value
        return value, ""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, bool):
        return (value, "") if isinstance(value, bool) else (None, "true or false")
    if isinstance(default, int):
        return (value, "") if number and isinstance(value, int) else (None, "an integer")
    if isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads 1e3 as text
            try:
                value = float(value)
            except ValueError:
                pass
            number = isinstance(value, float)
        return (float(value), "") if number else (None, "a number")
    if isinstance(default, list):
        return (value, "") if isinstance(value, list) else (None, "a list [a, b, ...]")
    return value, ""


def _substitute(value: Any, args: dict[str, Any], where: str, source: str) -> Any:
    if isinstance(value, str):
        whole = _ARG_RE.fullmatch(value.strip())
        if whole:
            name = whole.group(1)
            if name not in args:
                raise ConfigError(source, [(where, f"$(arg {name}) is not declared under 'args'")])
            return args[name]

        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in args:
                raise ConfigError(source, [(where, f"$(arg {m.group(1)}) is not declared under 'args'")])
            return str(args[m.group(1)])

        text = _ARG_RE.sub(repl, value)
        whole_file = _FILE_RE.fullmatch(text.strip())
        if whole_file:
            return _read_profile_file(whole_file.group(1).strip(), where, source)
        if _FILE_RE.search(text):
            raise ConfigError(source, [(where, "$(file ...) must be the whole value")])
        return text
    if isinstance(value, list):
        return [_substitute(v, args, where, source) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, args, f"{where}.{k}", source) for k, v in value.items()}
    return value


def _read_profile_file(path: str, where: str, source: str) -> str:
    """The text of ``$(file PATH)``: absolute, else share/vidplan_bringup/PATH of the installed workspace, else
    PATH under the repository root (the source tree's urdf/, calibration/)."""
    p = Path(path)
    if not p.is_absolute():
        repo = Path(__file__).resolve().parents[4] / path
        p = share_file("vidplan_bringup", path, repo)
    if not p.is_file():
        raise ConfigError(source, [(where, f"$(file {path}): no such file ({p})")])
    return p.read_text()


def _as_bool(value: Any, where: str, source: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise ConfigError(source, [(where, f"expected true/false, got {value!r}")])


def resolve_profile(
    profile: Profile,
    source: str,
    arg_overrides: dict[str, Any] | None = None,
    param_overrides: dict[str, dict[str, Any]] | None = None,
) -> list[ResolvedNode]:
    """Apply overrides and ``$(arg ...)`` substitutions; drop disabled nodes.

    Unknown override names are a :class:`ConfigError` (a typo must not be silently ignored), and so is an arg value
    that is not of the type of the arg's default (``clutter:=abc``; text, as :func:`parse_overrides` gives it, is
    read as that type). Node parameter names are checked against the nodes themselves:
    :meth:`vidplan_bringup.supervisor.Supervisor.check_parameters`.

    An override by a deprecated arg name (``profile.deprecated_args``) sets the new arg and issues a
    :class:`DeprecatedArgWarning` naming it (``warnings.warn``: callers may catch and print it); given together with
    the new name it is a :class:`ConfigError` naming both.
    """
    arg_overrides = dict(arg_overrides or {})
    param_overrides = param_overrides or {}
    problems: list[tuple[str, str]] = []
    renamed: list[tuple[str, str]] = []
    for old, new in profile.deprecated_args.items():
        if old not in arg_overrides:
            continue
        if new in arg_overrides:
            problems.append((old, f"deprecated old name of the arg '{new}', which is given too: give only "
                                  f"{new}:=VALUE"))
            arg_overrides.pop(old)
            continue
        arg_overrides[new] = arg_overrides.pop(old)
        renamed.append((old, new))
    problems += [(k, f"unknown profile arg (declared: {', '.join(profile.args) or 'none'})")
                 for k in arg_overrides if k not in profile.args]
    problems += [(f"{n}.*", f"unknown node (nodes: {', '.join(profile.nodes)})")
                 for n in param_overrides if n not in profile.nodes]
    typed: dict[str, Any] = {}
    for k, v in arg_overrides.items():
        if k not in profile.args:
            continue
        typed[k], expected = _typed_arg(profile.args[k], v)
        if expected:
            problems.append((k, f"expected {expected} (the default is {profile.args[k]!r}), got {v!r}"))
    if problems:
        raise ConfigError(f"{source} (command-line overrides)", problems)
    for old, new in renamed:
        warnings.warn(f"{source}: profile arg '{old}' is deprecated and will be removed in the next release; use "
                      f"'{new}' ({new}:=VALUE) instead", DeprecatedArgWarning, stacklevel=2)
    args = {**profile.args, **typed}
    nodes = []
    for name, spec in profile.nodes.items():
        where = f"nodes.{name}"
        if not _as_bool(_substitute(spec.enabled, args, f"{where}.enabled", source), f"{where}.enabled", source):
            continue
        params = _substitute(spec.parameters, args, f"{where}.parameters", source)
        params.update(param_overrides.get(name, {}))
        for key, val in params.items():
            if val is None or (isinstance(val, dict)):
                raise ConfigError(source, [(f"{where}.parameters.{key}",
                                            "ROS parameters must be scalars or lists of scalars")])
        remaps = {_substitute(k, args, f"{where}.remappings", source):
                  _substitute(v, args, f"{where}.remappings.{k}", source) for k, v in spec.remappings.items()}
        nodes.append(ResolvedNode(name=name, package=spec.package, executable=spec.executable,
                                  required=spec.required, respawn=spec.respawn and not spec.required,
                                  parameters=params, remappings=remaps))
    return nodes


#: rclpy's own parameters that exist only on some distributions (Jazzy+): a params file naming one would be refused
#: on Humble (vidplan nodes reject parameters they do not declare), so the generated files leave them out
_DISTRO_SPECIFIC_PARAMETERS = frozenset({"start_type_description_service"})


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True)
    return text.removesuffix("\n...\n").strip()


def documented_params_file(node: ResolvedNode, listing: dict[str, Any], command: str) -> str:
    """A ``--params-file`` for ``node`` holding every parameter it declares (nav2's params-file habit): the value
    the node takes with the profile (``listing["values"]``, from the node itself), each under its description and
    whether it is read-only; deprecated old names (``listing["deprecated"]``) are left out. ``listing`` is what the
    node printed in listing mode (:attr:`vidplan_bringup.supervisor.ParameterCheck.listings`); ``command`` is named in
    the header."""
    values, docs, ro = listing["values"], listing.get("descriptions", {}), listing.get("read_only", {})
    lines = [f"# {node.name} ({node.package}/{node.executable}): every parameter it declares, with the value this "
             "profile gives it.", f"# Generated by `{command}`; pass it with --ros-args --params-file FILE.",
             "/**:", "  ros__parameters:"]
    deprecated = listing.get("deprecated", {})  # old names kept for one release: new files use the new ones
    for name in sorted(values):
        if name in _DISTRO_SPECIFIC_PARAMETERS or name in deprecated:
            continue
        doc = " ".join(docs.get(name, "").split()) or "(no description)"
        lines.append(f"    # {doc}" + ("" if ro.get(name, True) else "  [live: ros2 param set]"))
        lines.append(f"    {name}: {_yaml_value(values[name])}")
    return "\n".join(lines) + "\n"


def ros_params_file_content(node: ResolvedNode) -> str:
    """The ``--params-file`` YAML for one node (``/**`` matches it whatever its namespace)."""
    return yaml.safe_dump({"/**": {"ros__parameters": node.parameters}}, sort_keys=True)
