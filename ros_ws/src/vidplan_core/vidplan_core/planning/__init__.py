"""Inference-time planning: proposals, objective, Algorithm 3 planner, CEM, real-time chunking.

Import the submodules directly (``vidplan_core.planning.planner`` etc.); this package imports nothing heavy.
"""
