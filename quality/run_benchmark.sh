#!/usr/bin/env bash
# Reproduces the v1-era results in quality/README.md (with today's defaults unless --set step_rule=v1 is added;
# the benchmark matrix is quality/run_matrix.sh) from the committed weights (CPU; about 30 min on 2 free
# cores). Usage: bash quality/run_benchmark.sh [seeds per report prompt, default 9] [steps, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-9}
STEPS=${2:-10}
PY=.venv/bin/python
OUT=quality/results
mkdir -p "$OUT"
$PY -m quality.localisation --scenes 128 --out "$OUT/localisation.json" > "$OUT/localisation.txt"
$PY -m quality.detector > "$OUT/detector.txt"
# calibration on the tuning prompts (three objects), seeds 1000.., Euler: the step size, then the other settings
# at the old default step size 20 and at the new one, 10
$PY -m quality.calibrate --prompts quality/prompts/tune3.txt --sampler euler --steps "$STEPS" --seeds 8 \
    --step-sizes 0,5,10,20,40,80 --extra "step_size=20;threshold=0.3" --extra "step_size=20;threshold=0.7" \
    --extra "step_size=20;threshold_mode=otsu" --extra "step_size=20;last_step=5" \
    --extra "step_size=20;last_step=9" --extra "step_size=20;ret_weight=0" \
    --out "$OUT/calibration3_euler.json" > "$OUT/calibration3_euler.txt" &
$PY -m quality.calibrate --prompts quality/prompts/tune3.txt --sampler euler --steps "$STEPS" --seeds 8 \
    --step-sizes 7.5,15 --extra "step_size=10;threshold=0.3" --extra "step_size=10;threshold=0.7" \
    --extra "step_size=10;threshold_mode=otsu" --extra "step_size=10;last_step=5" \
    --extra "step_size=10;ret_weight=0" --extra "step_size=10;seg_weight=0" \
    --out "$OUT/calibration3_euler_s10.json" > "$OUT/calibration3_euler_s10.txt" &
wait
$PY -m quality.calibrate --prompts quality/prompts/tune3.txt --sampler ddim --steps "$STEPS" --seeds 8 \
    --step-sizes 10,20 --out "$OUT/calibration3_ddim.json" > "$OUT/calibration3_ddim.txt"
# report runs, two at a time, one thread each: three-object prompts (neglect) with the defaults and with the
# old step size 20, then two-object prompts
for SAMPLER in euler ddim; do
    $PY -m quality.evaluate --prompts quality/prompts/report3.txt --seeds "$SEEDS" --sampler "$SAMPLER" \
        --steps "$STEPS" --threads 1 --out "$OUT/report3_$SAMPLER.json" > "$OUT/report3_$SAMPLER.txt" &
done
wait
for SAMPLER in euler ddim; do
    $PY -m quality.evaluate --prompts quality/prompts/report3.txt --seeds "$SEEDS" --sampler "$SAMPLER" \
        --steps "$STEPS" --threads 1 --variants astar --set step_size=20 \
        --out "$OUT/report3_${SAMPLER}_s20.json" > "$OUT/report3_${SAMPLER}_s20.txt" &
done
wait
for SAMPLER in euler ddim; do
    $PY -m quality.evaluate --prompts quality/prompts/report.txt --seeds "$SEEDS" --sampler "$SAMPLER" \
        --steps "$STEPS" --threads 1 --out "$OUT/report_$SAMPLER.json" > "$OUT/report_$SAMPLER.txt" &
done
wait
cat "$OUT/localisation.txt" "$OUT/detector.txt" "$OUT"/calibration3_*.txt "$OUT"/report3_*.txt \
    "$OUT"/report_*.txt
