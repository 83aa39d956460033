#!/usr/bin/env bash
# Re-measure loclab's GPU path in one go and print a table (docs/gpu.md). Meant to take under 8 minutes on a
# data-centre GPU; not yet timed on one.
#
#   bash scripts/gpu_check.sh             # needs a CUDA GPU; writes docs/bench/gpu_check.json
#   bash scripts/gpu_check.sh --dry-run   # any machine, CPU only, tiny data, under a minute: checks the script
#
# What it runs, in this order, on generated course data (1000 train / 200 val images, seed 641):
#   1. loclab bench --device cuda --quick --no-compile: fp32 eager vs the default path, images/s, each training
#      step's achieved FLOP/s against the bf16 matmul rate measured in the same run, the step breakdown;
#   2. loclab train detector --recipe fast (batch 16), then loclab eval detector: training time, images/s, mAP;
#   3. the same at --batch 128 --lr-scaling sqrt (does the recipe keep its quality at a GPU-sized batch?);
#   4. loclab run --preset quick: wall time, and each stage's.
# Every command runs from this working tree (PYTHONPATH=src python -m loclab): no install needed. The Python is
# $PYTHON if set, else .venv/bin/python if it exists, else python3. Set GPU_CHECK_WORK=DIR to keep the runs.
# A step that fails is reported and the others still run; the table says what was not measured.
set -euo pipefail

cd "$(dirname "$0")/.."
dry_run=0
case "${1:-}" in
  --dry-run) dry_run=1 ;;
  "") ;;
  *) echo "usage: bash scripts/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python
else py=python3
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
loclab() { "$py" -m loclab "$@"; }

work="${GPU_CHECK_WORK:-$(mktemp -d -t loclab-gpu-check.XXXXXX)}"
mkdir -p "$work"
if [[ -z "${GPU_CHECK_WORK:-}" ]]; then trap 'rm -rf "$work"' EXIT; fi

now() { "$py" -c 'import time; print(time.time())'; }
# timed FILE COMMAND...: run COMMAND, then write its wall seconds to FILE (only when it succeeded)
timed() {
  local file=$1; shift
  local t0; t0=$(now)
  "$@" || return
  "$py" -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 3))" "$t0" > "$file"
}
# attempt NAME COMMAND...: run COMMAND; when it fails, say so, note NAME in $work/failed and carry on
attempt() {
  local name=$1; shift
  if ! "$@"; then
    echo "gpu_check: $name failed (its output is above); carrying on" >&2
    echo "$name" >> "$work/failed"
  fi
}

if (( dry_run )); then
  echo "gpu_check: dry run on the CPU with tiny data (the numbers mean nothing; this checks the script)"
  device=cpu; n_train=16; n_val=8
  epochs=(--epochs 1); small=(--batch 8); large=(--batch 16 --lr-scaling sqrt)
  # the GPU's data path, forced onto the CPU: held data, batches gathered on the device
  extra=(--set train.device_data=on --set train.precision=fp32)
  out="$work/gpu_check.json"
else
  if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: this torch sees no CUDA device; run with --dry-run to check the script on a CPU" >&2
    exit 1
  fi
  device=cuda; n_train=1000; n_val=200
  epochs=(); small=(); large=(--batch 128 --lr-scaling sqrt); extra=()
  out=docs/bench/gpu_check.json
fi
data="$work/data"

echo "== generating course data into $data"
loclab generate shapes --out "$data" --train "$n_train" --val "$n_val" >/dev/null
loclab generate figures --out "$data" --train "$n_train" --val "$n_val" >/dev/null

bench_json() {
  loclab bench --device "$device" --quick --no-compile --json > "$work/bench.json.part" &&
    mv "$work/bench.json.part" "$work/bench.json"
}
if (( dry_run )); then
  echo "== loclab bench: skipped in a dry run (minutes on a CPU); the summary reads docs/bench/2026-11-21-cpu-2core.json"
  bench=(--bench docs/bench/2026-11-21-cpu-2core.json --dry-run)
else
  echo "== loclab bench --device cuda --quick --no-compile"
  attempt bench bench_json
  bench=()
fi

for name in detector_fast detector_fast_large_batch; do
  if [[ $name == detector_fast ]]; then flags=("${small[@]}"); else flags=("${large[@]}"); fi
  echo "== loclab train detector --recipe fast ${flags[*]-} ${epochs[*]-}"
  run="$work/$name"
  train_and_eval() {
    loclab train detector --data-root "$data" --out "$run" --recipe fast --quiet --no-tensorboard \
      ${flags[@]+"${flags[@]}"} ${epochs[@]+"${epochs[@]}"} ${extra[@]+"${extra[@]}"} &&
      loclab eval detector --run "$run" --quiet --resamples 0 >/dev/null
  }
  attempt "$name" timed "$work/$name.wall_s" train_and_eval
  if [[ -f "$work/$name.wall_s" ]]; then mv "$work/$name.wall_s" "$run/wall_s"; fi
done

if (( dry_run )); then
  echo "== loclab run --preset quick: skipped in a dry run (minutes on a CPU)"
else
  echo "== loclab run --preset quick"
  attempt study timed "$work/study_wall_s" loclab run --preset quick --out "$work/study" --data-root "$data" \
    --no-tensorboard
fi

echo
"$py" scripts/gpu_check_summary.py "$work" "$out" ${bench[@]+"${bench[@]}"}
