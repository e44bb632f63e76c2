# vidplan — every target installs what it needs (scripts/setup.sh is idempotent and fast when nothing changed).
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV := source scripts/env.sh &&
PYTEST_ARGS ?=
# make test splits the suite by file over this many pytest-xdist workers (each its own ROS domain); 0 = one process
TEST_WORKERS ?= 2

# what runs on the robot's ROS 2 Python (3.10 on Humble); tests/project/unit/test_lint.py checks the same paths
PY310_PATHS = ros_ws/src/vidplan_core/vidplan_core ros_ws/src/vidplan_ros/vidplan_ros ros_ws/src/vidplan_sim/vidplan_sim \
	ros_ws/src/vidplan_bringup ros_ws/src/vidplan_app/vidplan_app

.PHONY: help setup shell test test-unit test-integration lint demo demo-scripted demo-models up bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup:  ## install Debian/Python/ROS dependencies, the Panda MJCF, and colcon-build ros_ws (idempotent)
	@bash scripts/setup.sh

shell: setup  ## open a shell with the workspace sourced and the ROS environment set
	@bash --rcfile <(echo 'source ~/.bashrc 2>/dev/null; source scripts/env.sh; PS1="(vidplan) $$PS1"') -i

test: setup  ## the whole test suite (unit + integration + e2e), as CI runs it (TEST_WORKERS=2 processes)
	@$(ENV) python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-unit: setup  ## unit tests only
	@$(ENV) python -m pytest -m "unit" $(PYTEST_ARGS)

test-integration: setup  ## real multi-process ROS 2 tests only
	@$(ENV) python -m pytest -m "integration" $(PYTEST_ARGS)

lint: setup  ## ruff; vermin (the packages run on Python 3.10, ROS 2 Humble); the architecture contracts (.importlinter)
	@$(ENV) ruff check .
	@$(ENV) vermin --target=3.10- --violations --no-tips -q $(PY310_PATHS)
	@$(ENV) lint-imports --no-cache

up: setup  ## start a bring-up profile: make up PROFILE=sim ARGS='clutter:=2'
	@$(ENV) vidplan up $(PROFILE) $(ARGS)

BENCHES ?= sim_render executor_latency recorder_throughput planner_overhead plan_cycle flops_full distillation
bench: setup  ## run the CPU benchmarks (about 1 h on 2 cores); results in bench/results/ (GPU: bench/gpu_plan_cycle.py)
	@$(ENV) for b in $(BENCHES); do echo "== bench/$$b.py"; python bench/$$b.py || exit 1; done

clean:  ## remove build products (keeps .venv and .cache)
	rm -rf ros_ws/build ros_ws/install ros_ws/log .cache/stamps/colcon

demo: setup  ## main job: one closed-loop episode, sim + learned planner (models/demo) + executor, with a report
	@# the planner runs the bundle's ONNX export on onnxruntime, as on the robot (BACKEND=torch: the torch models)
	@# exit 1 = the episode ran and the task failed (the report says so); make fails only when something broke
	@# the episode length (225 control steps = 15 s of sim time) comes from the planner configuration
	@# DEMO_ARGS: more `vidplan demo` options, e.g. DEMO_ARGS='--json result.json' (bench/demo_latency.py)
	@$(ENV) vidplan demo --launch --model models/demo --backend $(or $(BACKEND),onnxruntime) --seed $(or $(SEED),0) --clutter 1 \
		--timeout 600 $(DEMO_ARGS); rc=$$?; [ $$rc -le 1 ] || exit $$rc

demo-scripted: setup  ## the scripted pick-and-place through sim + executor (no learned models)
	@$(ENV) vidplan demo --scripted --launch

demo-models: setup  ## re-create models/demo from scratch: simulate, convert, train, assemble, export, MODEL_CARD.md
	@bash scripts/make_demo_models.sh
