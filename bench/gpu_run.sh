#!/usr/bin/env bash
# The GPU benchmarks in one call, for a session that is lent a GPU machine for minutes (its image has torch,
# transformers and onnxruntime, no diffusers or pydantic, and no network).
#
# Here, before the call (once per checkout; about 9 MB of wheels, ignored by git):
#   bash bench/gpu_run.sh --fetch-wheels
# On the GPU machine, from the repository root, with .whl carried along:
#   bash bench/gpu_run.sh            # results land in bench/results and, when $OUT is set, are copied there
#
# Runs, each under its own time limit so that one hang does not eat the others' time:
#   1. bench/gpu_plan_cycle.py eager bf16 (no compile): the numbers that do not depend on torch.compile;
#   2. bench/gpu_plan_cycle.py with CUDA graphs (torch.compile mode="reduce-overhead"): the issue's configuration.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WHEELS=(diffusers==0.42.1 pydantic==2.14.3 pydantic-core==2.50.4 annotated-types typing-inspection
        importlib_metadata)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  gd=$(git rev-parse --git-dir)
  mkdir -p "$gd/info"
  grep -qx "/.whl/" "$gd/info/exclude" 2>/dev/null || echo "/.whl/" >> "$gd/info/exclude"
  exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
fi

export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vidplan_site \
    .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/vidplan_site:$PWD/ros_ws/src/vidplan_core${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD/ros_ws/src/vidplan_core${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 -c "import torch, transformers, diffusers; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())" || exit 1

quiet() { grep -v -e '^\[transformers\]' -e 'warn_once' -e 'Dynamo detected' -e 'originates from' -e '^ *File "' \
          -e '^ *if dtype' -e '^$'; }
# EAGER_S=0 / GRAPHS_S=0 skip a run (the eager numbers are in bench/results since 2026-12-04; the compiled run
# printed no cycle in 300 s there, so the next session gives it the whole call: EAGER_S=0 GRAPHS_S=540)
if [[ "${EAGER_S:-150}" != 0 ]]; then
  timeout "${EAGER_S:-150}" python3 bench/gpu_plan_cycle.py --no-compile --no-cuda-graphs \
    --stem gpu_plan_cycle_eager 2>&1 | quiet
fi
if [[ "${GRAPHS_S:-300}" != 0 ]]; then
  timeout "${GRAPHS_S:-300}" python3 bench/gpu_plan_cycle.py --ks "${KS:-1,4}" 2>&1 | quiet
fi
if [[ -n "${OUT:-}" ]]; then
  cp bench/results/gpu_plan_cycle_eager.* bench/results/gpu_plan_cycle.json bench/results/gpu_plan_cycle.md \
    "$OUT"/ 2>/dev/null || true
fi
