"""The protocol by which a node lists the parameters it declares, without starting (used by
``vidplan_ros.node_runner`` on the node side and ``vidplan_bringup.supervisor`` on the checking side).

A node started with ``VIDPLAN_LIST_PARAMETERS=1`` in its environment (:data:`LIST_PARAMETERS_ENV`) builds itself up to
its last ``declare_parameter``, prints one line ``VIDPLAN_DECLARED_PARAMETERS {json}`` (:data:`DECLARED_PARAMETERS_TAG`;
keys ``node``, ``declared``, ``overrides``, ``values``, ``descriptions``, ``read_only``, and ``deprecated``: old
parameter name → new name, for renamed parameters still declared under their old name) and exits 0.
"""

from __future__ import annotations

__all__ = ["DECLARED_PARAMETERS_TAG", "LIST_PARAMETERS_ENV"]

LIST_PARAMETERS_ENV = "VIDPLAN_LIST_PARAMETERS"
DECLARED_PARAMETERS_TAG = "VIDPLAN_DECLARED_PARAMETERS "
