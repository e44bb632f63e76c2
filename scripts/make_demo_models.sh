#!/usr/bin/env bash
# Re-create every file of models/demo from scratch: simulate episodes and labelled grounding frames → convert (workspace
# crops) → train the grounded semantic scorer and the VAE (in parallel, one core each), the world model (beside it the
# tiny decoder for scoring), the flow map (beside it the scorer retrained on decoded views), the heads and the BC
# policy (the bundled demo-*.yaml configs) → assemble (the first scorer as the world model's text_conditioner) → the
# UQ head's temperature (vidplan calibrate-uq) → ONNX export + manifest → MODEL_CARD.md.
#
#   make demo-models                       # the full recipe (config step counts; hours on a 2-core CPU)
#   EPISODES=90 STEPS_GROUNDED=1200 STEPS_VAE=400 STEPS_WORLD_MODEL=1000 STEPS_FLOW_MAP=200 STEPS_HEADS=200 \
#     make demo-models      # the CPU budget proposed for models/demo (world model first; not yet run end to end
#                           # at these counts: models/demo was built by the previous recipe, see its MODEL_CARD.md)
#
# Environment (all optional):
#   EPISODES      simulated episodes (default 90; ~1/3 deliberate expert failures, clutter 0–3, all task kinds)
#   GROUNDING_SCENES, GROUNDING_EVAL_SCENES   labelled scenes for the grounded scorer (default 600, 150)
#   STEPS_SCALE   multiplies every config's train.max_steps (default 1.0)
#   STEPS_GROUNDED, STEPS_VAE, STEPS_TINY_DECODER, STEPS_WORLD_MODEL, STEPS_FLOW_MAP, STEPS_DECODED_GROUNDED,
#   STEPS_HEADS, STEPS_BC
#                 exact step count of one stage
#   DECODED_SCORER  1 (default): retrain the scorer on decoded views and ship it (models/demo got this stage applied
#                 after its recipe run: its MODEL_CARD.md); 0: ship the first scorer alone
#   WORK          working directory for bags, datasets and runs (default .cache/demo-models; resumable: finished
#                 stages are skipped, an interrupted training resumes from its newest checkpoint)
#   OUT           model directory to write (default models/demo)
#   SEED          first episode seed (default 1000; evaluation uses seeds below 1000)
#   EVAL_EPISODES held-out episodes the model card evaluates on (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source scripts/env.sh >/dev/null

EPISODES=${EPISODES:-90}
GROUNDING_SCENES=${GROUNDING_SCENES:-600}
GROUNDING_EVAL_SCENES=${GROUNDING_EVAL_SCENES:-150}
EVAL_EPISODES=${EVAL_EPISODES:-3}
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
# the code that builds the models, for metrics.json (the working tree may carry uncommitted changes)
built_from=$(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo -dirty)

# Two independent producers on the two cores: the demonstrations and the grounded scorer's labelled frames.
(
  if [ ! -f "$WORK/bags/.done" ]; then
    say "1/8 simulating $EPISODES episodes (seeds $SEED..) → $WORK/bags"
    # 320x180 cameras (DROID's exterior size): the workspace crop below keeps a 4 cm object several pixels wide; 5 Hz
    # cameras (the model rate) so the simulation renders no frame the dataset drops
    vidplan data generate --out "$WORK/bags" --episodes "$EPISODES" --seed "$SEED" --width 320 --height 180 \
      --camera-rate 5 --clutter 0,1,2,3 --failure-prob 0.33 --max-steps 150
    touch "$WORK/bags/.done"
  fi
) &
sim_pid=$!
(
  if [ ! -f "$WORK/grounded/.done" ]; then
    say "2/8 rendering $GROUNDING_SCENES labelled scenes for the grounded scorer → $WORK/grounded"
    vidplan data grounding --out "$WORK/grounded" --train-scenes "$GROUNDING_SCENES" \
      --eval-scenes "$GROUNDING_EVAL_SCENES"
    touch "$WORK/grounded/.done"
  fi
) &
grd_pid=$!
wait "$sim_pid" || { say "simulation failed (log above)"; exit 1; }
wait "$grd_pid" || { say "grounding data failed (log above)"; exit 1; }
if [ ! -f "$WORK/data/.done" ]; then
  say "3/8 converting bags → $WORK/data (workspace crops at 48x80 per view, 5 Hz, p01/p99 action statistics)"
  vidplan data convert "$WORK/bags" --out "$WORK/data" --size 48x80 --crop workspace --val-fraction 0.15 --overwrite
  touch "$WORK/data/.done"
fi

train() {  # train KIND CONFIG [DATA [RUN [--set K=V ...]]]: skip when final/ exists, resume when checkpoints exist
  local kind=$1 cfg=$2 data=${3:-$WORK/data} run=${4:-$1}
  if [ $# -ge 4 ]; then shift 4; else set --; fi
  local extra=("$@") out="$WORK/runs/$run"
  if [ -d "$out/final" ]; then say "   $run: done ($out/final)"; return; fi
  # steps = config × STEPS_SCALE; the config's init paths (runs/demo/<kind>/final) point into $WORK/runs; resume
  # when the run directory already holds a complete checkpoint
  local plan
  local var="STEPS_${run^^}"; var=${var//-/_}
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
  say "   $run: $cfg $plan → $out"
  local t0; t0=$(date +%s)
  # shellcheck disable=SC2086
  vidplan train "$kind" --config "$cfg" --data "$data" --out "$out" $plan "${extra[@]}"
  echo "$run $plan wall_s=$(( $(date +%s) - t0 ))" >> "$WORK/train_times.txt"
}
say "4/8 training the grounded semantic scorer and the VAE (on the crops), one core each"
train grounded demo-grounded "$WORK/grounded" > "$WORK/train_grounded.log" 2>&1 &
grd_pid=$!
train vae demo-vae
wait "$grd_pid" || { say "grounded training failed: $WORK/train_grounded.log"; tail -20 "$WORK/train_grounded.log"; exit 1; }
tail -1 "$WORK/train_grounded.log" | tee -a "$LOG"
say "5/8 training the world model (EDM teacher; residual to the current frame, motion-weighted loss) and, on the other"
say "    core, distilling the VAE decoder into the tiny decoder the semantic reward decodes with"
train tiny-decoder demo-tiny-decoder > "$WORK/train_tiny_decoder.log" 2>&1 &
td_pid=$!
train world-model demo-world-model
wait "$td_pid" || { say "tiny-decoder training failed: $WORK/train_tiny_decoder.log"; tail -20 "$WORK/train_tiny_decoder.log"; exit 1; }
tail -1 "$WORK/train_tiny_decoder.log" | tee -a "$LOG"
if [ "${DECODED_SCORER:-1}" = 1 ]; then
  # The planner scores decoded frames, where the first scorer grounds far less (bench/results/grounding_recipe.md);
  # this one sees half of its items through the VAE and the tiny decoder, and its config's attribute options teach it
  # shape (bench/results/grounding_decoded_attributes.md). The world model, flow map, heads and policy
  # keep the first scorer's text embedding (assembled as text_conditioner/).
  say "6/8 distilling the flow map (PSD) and, on the other core, retraining the grounded scorer on decoded views"
  train grounded demo-decoded-grounded "$WORK/grounded" decoded-grounded \
    --set "options.roundtrip_autoencoder=$WORK/runs/vae/final" \
    --set "options.roundtrip_decoder=$WORK/runs/tiny-decoder/final" > "$WORK/train_decoded_grounded.log" 2>&1 &
  dg_pid=$!
  train flow-map demo-flow-map
  wait "$dg_pid" || { say "decoded-view scorer training failed: $WORK/train_decoded_grounded.log"
                      tail -20 "$WORK/train_decoded_grounded.log"; exit 1; }
  tail -1 "$WORK/train_decoded_grounded.log" | tee -a "$LOG"
  scorer=(--semantic "$WORK/runs/decoded-grounded/final" --text-conditioner "$WORK/runs/grounded/final")
else
  say "6/8 distilling the flow map (PSD)"
  train flow-map demo-flow-map
  scorer=(--semantic "$WORK/runs/grounded/final")
fi
say "7/8 training the UQ and reward heads, and the behaviour-cloned nominal policy (one core each)"
train bc demo-bc > "$WORK/train_bc.log" 2>&1 &
bc_pid=$!
train heads demo-heads
wait "$bc_pid" || { say "bc training failed: $WORK/train_bc.log"; tail -20 "$WORK/train_bc.log"; exit 1; }
tail -1 "$WORK/train_bc.log" | tee -a "$LOG"

say "8/8 assembling $OUT, exporting ONNX, writing MODEL_CARD.md"
# Half-precision storage of the world-model parts (computed in float32; weights rounded once, here). The export then
# stores them as float16 too, losslessly, in one weights file shared by all graphs (see models/README.md).
# The grounded scorer scores the wrist view and returns the maps of both exterior views: the gripper-referenced
# centring term compares the gripper with the named object in each (bench/results/closed_loop_grounded.md).
vidplan assemble-models --runs "$WORK/runs" --out "$OUT" --overwrite --storage-dtype float16 --no-teacher \
  "${scorer[@]}" --semantic-view 2 --centring-view 0 --map-views 0,1
# The EDM teacher stays in $WORK/runs/world-model/final (--no-teacher): planning needs only the flow map (its distilled
# copy), and leaving it out keeps the bundle small. assemble-models writes the index $OUT/bundle.json; the export below
# adds its onnx/ entry. ONNX without graph simplification: onnxslim's constant folding stores
# transformed copies of the weights inside the graphs (56 → 35 MB for the forward graphs of this model).
# Batch sizes: 8 = the planner's default candidates (6 basis directions + hold + gripper toggle), 16 = CEM's default
# population, 1 for single candidates. A count without its own graph runs padded to the next size (on a CPU that padding costs its
# full compute: 7 candidates in a 16-graph took 2.2x as long); the graphs share one weights file, so each size
# adds only its graph structure (~1 MB).
# The UQ head's temperature (temperature scaling: bench/results/uq_calibration.md), fitted on simulated episodes that
# neither its training (seeds from $SEED) nor the model card's evaluation (seeds from 0) uses; before the export,
# whose heads graphs divide by it.
if [ ! -f "$WORK/calib_bags/.done" ]; then
  vidplan data generate --out "$WORK/calib_bags" --episodes 8 --seed 2000 --width 320 --height 180 \
    --camera-rate 5 --clutter 0,1,2,3 --failure-prob 0.33 --max-steps 150
  touch "$WORK/calib_bags/.done"
fi
vidplan calibrate-uq "$OUT" --bags "$WORK/calib_bags" --out "$WORK/calibrate-uq" --write | tee -a "$LOG"
rm -rf "$OUT/onnx"
vidplan export "$OUT" --out "$OUT/onnx" --flow-steps 1 --batch 1,8,16 --grad-batch 1 --simplify none --verify --compact
python scripts/model_card.py --model "$OUT" --work "$WORK" --episodes "$EPISODES" --eval-episodes "$EVAL_EPISODES" \
  --recipe "STEPS_SCALE=$STEPS_SCALE $(env | grep -E '^STEPS_[A-Z_]+=' | grep -v STEPS_SCALE | sort | tr '\n' ' ')" \
  --wall-s $(( $(date +%s) - t_start )) --commit "$built_from"
du -sh "$OUT" | tee -a "$LOG"
say "done: $OUT (see $OUT/MODEL_CARD.md)"
