#!/usr/bin/env bash
# The benchmark matrix of quality/README.md ("The matrix") from the committed weights, CPU only. Each job is
# cached in its --out folder (job_*.json), so an interrupted run resumes and a rerun only rewrites the tables.
# About 30 min on 2 cores for the grain report matrix (A&E at 50 steps is most of it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SAMPLERS=euler,euler_a,dpmpp_2m_k,ddim
# the tuning family drawn like the report sets (held-out pairs allowed; seeds 2000+): A-STAR, binding, Both at 0.25
# (Both's default since this version; "both_one" is Both at weight 1, "both" in the tables below, made before)
$PY -m quality.matrix --family tuneh --counts 3,4 --samplers $SAMPLERS --steps 10,25 --seeds 32 --per-seed 2 \
    --variants "astar,astar_bind,both_quarter" --versus both_quarter:astar --jobs 2 --out quality/results/matrix_tuneh
# the report matrix with grain (records carry detector.grain; today's defaults, step size 45, binding, A&E, Both)
$PY -m quality.matrix --family report --counts 3,4,3n --samplers $SAMPLERS --steps 10,25,50 --seeds 32 \
    --per-seed 2 --variants "astar,e45:step_size=45,aae,both_one,astar_bind,both_quarter" --versus astar_bind:astar \
    --jobs 2 --out quality/results/matrix_report_grain
# held-out prompt sets with grain (2, 3 and 4 objects; seeds 5000+), the samplers users run most, 25 steps
$PY -m quality.matrix --family heldout --counts 2,3,4 --samplers euler_a,dpmpp_2m_k --steps 25 --seeds 32 \
    --per-seed 2 --variants "astar,e45:step_size=45,aae,both_one,astar_bind,both_quarter" --versus astar_bind:astar \
    --jobs 2 --out quality/results/matrix_heldout_grain
# the crossed cell with grain (variance shares of seed, prompt and method)
$PY -m quality.matrix --family report --counts 4 --samplers euler --steps 10 --seeds 32 --per-seed 0 \
    --variants astar,aae --jobs 2 --out quality/results/matrix_crossed_grain
# the failing three-object cells again on 64 fresh seeds (100-163)
$PY -m quality.matrix --family report --counts 3 --samplers dpmpp_2m_k,euler --steps 10,25 --seeds 64 \
    --seed-offset 100 --per-seed 2 --variants astar --jobs 2 --out quality/results/matrix_report3_seeds100
# Both at 0.25's failing three-object cells of the report matrix again, on 64 fresh seeds (100-163)
$PY -m quality.matrix --family report --counts 3 --samplers euler_a,dpmpp_2m_k --steps 10,25 --seeds 64 \
    --seed-offset 100 --per-seed 2 --variants astar,both_quarter --versus both_quarter:astar --jobs 2 \
    --out quality/results/matrix_report3_seeds100_both
$PY -m quality.matrix --family report --counts 4 --samplers dpmpp_2m_k --steps 50 --seeds 64 --seed-offset 100 \
    --per-seed 2 --variants astar,both_quarter --versus both_quarter:astar --jobs 2 \
    --out quality/results/matrix_report4_dpm50_seeds100_both
# (the matrices below were made before grain: their records have none, and a rerun recomputes them with it)
# the report matrix with today's defaults (A-STAR and Both: the early rule; unit start noise): 3 and 4 objects,
# 3 objects with noun-only concepts; 32 seeds x 2 prompts per cell; early against the previous default, steady
$PY -m quality.matrix --family report --counts 3,4,3n --samplers $SAMPLERS --steps 10,25,50 --seeds 32 \
    --per-seed 2 --variants astar,astar_steady,aae,both_one --versus astar:astar_steady --jobs 2 \
    --out quality/results/matrix_report_early
# held-out prompt sets (2, 3 and 4 objects; seeds 5000+), the samplers users run most, 25 steps
$PY -m quality.matrix --family heldout --counts 2,3,4 --samplers euler_a,dpmpp_2m_k --steps 25 --seeds 32 \
    --per-seed 2 --variants astar,astar_steady,aae --versus astar:astar_steady --jobs 2 \
    --out quality/results/matrix_heldout_early
# (the raw-noise tables in results/matrix_report, matrix_heldout: add --noise raw and the old variant lists)
# a crossed cell (every seed x every prompt) for the variance shares of seed, prompt and method
$PY -m quality.matrix --family report --counts 4 --samplers euler --steps 10 --seeds 32 --per-seed 0 \
    --variants astar,aae --jobs 2 --out quality/results/matrix_crossed_early
# the tuning runs behind docs/method.md "Why this rule" (--rule registers a step rule for the run)
# $PY -m quality.matrix --family tune --counts 3,4 --samplers $SAMPLERS --steps 10,25 --seeds 32 --per-seed 2 \
#     --rule "b15:normalise=1,budget=10,blur=1.5" --variants "astar,astar_v1,s45b15:step_size=45;step_rule=b15" \
#     --jobs 2 --out /tmp/tune
# the tuning run behind docs/method.md "Why early" (`until`: the share of each pass's steps that is refined)
# $PY -m quality.matrix --family tune --counts 3,4 --samplers $SAMPLERS --steps 10,25 --seeds 32 --per-seed 2 \
#     --rule "u60:normalise=1,budget=10,blur=1,power=0.5,keep_norm=1,until=0.6" \
#     --variants "astar,astar_steady,u60:step_rule=u60,e45:step_size=45,bind:bind_weight=0.25" --jobs 2 --out /tmp/tune
