"""Where installed data files live: the colcon share folder when the workspace is sourced, else the source tree."""

from __future__ import annotations

from pathlib import Path

__all__ = ["share_file"]


def share_file(package: str, relative: str, source_fallback: Path) -> Path:
    """``share/<package>/<relative>`` of the sourced workspace if it exists there, else ``source_fallback``.

    Uses the ament index (as ``ros2 pkg prefix`` does) without requiring ROS: plain-Python use of vidplan_core on a
    machine without the workspace falls back to the source tree.
    """
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return source_fallback
    try:
        p = Path(get_package_share_directory(package)) / relative
    except (PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset (no workspace sourced)
        return source_fallback
    return p if p.is_file() else source_fallback
