#!/usr/bin/env bash
# Reproduces the "Does it work?" numbers in README.md from the committed weights (CPU; about 20 min on 2 free
# cores). Usage: bash quality/run_benchmark.sh [seeds per report prompt, default 9] [steps, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-9}
STEPS=${2:-10}
PY=.venv/bin/python
OUT=quality/results
mkdir -p "$OUT"
$PY -m quality.localisation --scenes 128 --out "$OUT/localisation.json" > "$OUT/localisation.txt"
# calibration (tuning prompts, other seeds) and the two report runs, in parallel, one thread each
$PY -m quality.calibrate --prompts quality/prompts/tune.txt --sampler euler --steps "$STEPS" --seeds 4 \
    --step-sizes 0,10,20,40,100 --out "$OUT/calibration_euler.json" > "$OUT/calibration_euler.txt" &
for SAMPLER in euler ddim; do
    $PY -m quality.evaluate --prompts quality/prompts/report.txt --seeds "$SEEDS" --sampler "$SAMPLER" \
        --steps "$STEPS" --threads 1 --out "$OUT/report_$SAMPLER.json" > "$OUT/report_$SAMPLER.txt" &
done
wait
cat "$OUT/localisation.txt" "$OUT/calibration_euler.txt" "$OUT/report_euler.txt" "$OUT/report_ddim.txt"
