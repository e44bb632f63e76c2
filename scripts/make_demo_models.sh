#!/usr/bin/env bash
# Re-create every file of models/demo from scratch: simulate episodes → convert → train semantic, VAE, world model,
# flow map, heads (the bundled demo-*.yaml configs) → assemble → ONNX export + manifest → MODEL_CARD.md.
#
#   make demo-models                       # the full recipe (config step counts; hours on a 2-core CPU)
#   EPISODES=200 STEPS_SEMANTIC=1500 STEPS_VAE=200 STEPS_WORLD_MODEL=300 STEPS_FLOW_MAP=150 STEPS_HEADS=150 \
#     make demo-models      # what models/demo was built with (≈ 52 min on 2 shared CPU cores; see MODEL_CARD.md)
#
# Environment (all optional):
#   EPISODES      simulated episodes (default 60; ~1/3 deliberate expert failures, clutter 0–3, all task kinds)
#   STEPS_SCALE   multiplies every config's train.max_steps (default 1.0)
#   STEPS_SEMANTIC, STEPS_VAE, STEPS_WORLD_MODEL, STEPS_FLOW_MAP, STEPS_HEADS   exact step count of one stage
#   WORK          working directory for bags, dataset and runs (default .cache/demo-models; resumable: finished
#                 stages are skipped, an interrupted training resumes from its newest checkpoint)
#   OUT           model directory to write (default models/demo)
#   SEED          first episode seed (default 1000; evaluation uses seeds below 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source scripts/env.sh >/dev/null

EPISODES=${EPISODES:-60}
STEPS_SCALE=${STEPS_SCALE:-1.0}
WORK=${WORK:-.cache/demo-models}
OUT=${OUT:-models/demo}
SEED=${SEED:-1000}
# torch with 2 threads on a shared 2-core machine is several times slower than with 1 for models this size
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$WORK"
LOG="$WORK/make_demo_models.log"
say() { printf '\033[1;34m[demo-models]\033[0m %s\n' "$*" | tee -a "$LOG"; }
t_start=$(date +%s)

if [ ! -f "$WORK/bags/.done" ]; then
  say "1/7 simulating $EPISODES episodes (seeds $SEED..) → $WORK/bags"
  # 160x96 per view (2x the model's 80x48, the same 3:5 aspect as DROID's 320x180 crops), 15 Hz
  vidplan data generate --out "$WORK/bags" --episodes "$EPISODES" --seed "$SEED" --width 160 --height 96 \
    --clutter 0,1,2,3 --failure-prob 0.33 --max-steps 150
  touch "$WORK/bags/.done"
fi
if [ ! -f "$WORK/data/.done" ]; then
  say "2/7 converting bags → $WORK/data (48x80 per view, 5 Hz, p01/p99 action statistics, split by episode)"
  vidplan data convert "$WORK/bags" --out "$WORK/data" --size 48x80 --val-fraction 0.15 --overwrite
  touch "$WORK/data/.done"
fi

train() {  # train KIND CONFIG: skip when final/ exists, resume when checkpoints exist
  local kind=$1 cfg=$2 out="$WORK/runs/$1"
  if [ -d "$out/final" ]; then say "   $kind: done ($out/final)"; return; fi
  # steps = config × STEPS_SCALE; the config's init paths (runs/demo/<kind>/final) point into $WORK/runs; resume
  # when the run directory already holds a complete checkpoint
  local plan
  local var="STEPS_${kind^^}"; var=${var//-/_}
  plan=$(python - "$cfg" "${!var:-}" "$STEPS_SCALE" "$WORK/runs" "$out" <<'EOF2'
import sys
from importlib.resources import files
import yaml
from vidplan_core.training.trainer import latest_checkpoint
cfg = yaml.safe_load((files("vidplan_core.training") / "configs" / f"{sys.argv[1]}.yaml").read_text())
steps = int(sys.argv[2]) if sys.argv[2] else max(1, round(cfg["train"]["max_steps"] * float(sys.argv[3])))
args = ["--max-steps", str(steps)]
for key, path in (cfg.get("init") or {}).items():
    if path:
        args += ["--set", f"init.{key}={sys.argv[4]}/{path.split('/')[-2]}/final"]
if latest_checkpoint(sys.argv[5]) is not None:
    args.append("--resume")
print(" ".join(args))
EOF2
)
  say "   $kind: $cfg $plan → $out"
  local t0; t0=$(date +%s)
  # shellcheck disable=SC2086
  vidplan train "$kind" --config "$cfg" --data "$WORK/data" --out "$out" $plan
  echo "$kind $plan wall_s=$(( $(date +%s) - t0 ))" >> "$WORK/train_times.txt"
}
say "3/7 training semantic + VAE"
train semantic demo-semantic
train vae demo-vae
say "4/7 training the world model (EDM teacher)"
train world-model demo-world-model
say "5/7 distilling the flow map (PSD)"
train flow-map demo-flow-map
say "6/7 training the UQ and reward heads"
train heads demo-heads

say "7/7 assembling $OUT, exporting ONNX, writing MODEL_CARD.md"
# Half-precision storage of the world-model parts (computed in float32; weights rounded once, here). The export then
# stores them as float16 too, losslessly, in one weights file shared by all graphs (see models/README.md).
vidplan assemble-models --runs "$WORK/runs" --out "$OUT" --overwrite --storage-dtype float16 --no-teacher
# The EDM teacher stays in $WORK/runs/world-model/final (--no-teacher): planning needs only the flow map (its distilled
# copy), and leaving it out keeps the bundle small. assemble-models writes the index $OUT/bundle.json; the export below
# adds its onnx/ entry. ONNX without graph simplification: onnxslim's constant folding stores
# transformed copies of the weights inside the graphs (56 → 35 MB for the forward graphs of this model).
# Batch sizes: 7 = the planner's default candidates (6 basis directions + hold), 16 = CEM's default population, 1 for
# single candidates. A count without its own graph runs padded to the next size (on a CPU that padding costs its
# full compute: 7 candidates in the 16-graph took 2.2x as long); the graphs share one weights file, so each size
# adds only its graph structure (~1 MB).
rm -rf "$OUT/onnx"
vidplan export "$OUT" --out "$OUT/onnx" --flow-steps 1 --batch 1,7,16 --grad-batch 1 --simplify none --verify --compact
python scripts/model_card.py --model "$OUT" --work "$WORK" --episodes "$EPISODES" \
  --recipe "STEPS_SCALE=$STEPS_SCALE $(env | grep -E '^STEPS_[A-Z_]+=' | grep -v STEPS_SCALE | sort | tr '\n' ' ')" \
  --wall-s $(( $(date +%s) - t_start ))
du -sh "$OUT" | tee -a "$LOG"
say "done: $OUT (see $OUT/MODEL_CARD.md)"
