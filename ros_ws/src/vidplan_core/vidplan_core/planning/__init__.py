"""Inference-time planning: proposals, Algorithm 3 planner, CEM, real-time chunking (the objective it
maximises is :mod:`vidplan_core.objective`, below the planner and the runtime that both compute it).

Import the submodules directly (``vidplan_core.planning.planner`` etc.); this package imports nothing heavy.
"""
