#!/usr/bin/env bash
# The bare-photo decision's false-accept rate against catalog size: small relit-texture catalogs.
#
#   bench/texture_catalog_sizes.sh [OUT] [CONFIG] [EXTRA_RESULTS.jsonl...]
#
# The texture side's accept point is calibrated on cal-tex (300 registered relit surfaces, 400 stranger shots) and,
# since stop 37, on these small catalogs too (bench/recalibrate.sh calls this script to build and evaluate them).
# Each folder is the same generator's from its own seed (never the evaluation's seed 2 nor cal-tex's seed 1): 24
# folders of 10 surfaces (8 registered, 8 stranger shots each) and 6 of 40 (30 registered, 40 stranger shots), in
# OUT/n10-SEED and OUT/n40-SEED (built when missing). Each is evaluated with CONFIG (default: the shipped
# pipeline/data/default.yaml) into RESULTS (default OUT/results; with REUSE set, a folder already evaluated there is
# kept), the answers pooled per size into RESULTS/cal-tex10.jsonl and cal-tex40.jsonl, and
# bench/shift_texture_experts.py prints each size's bare strangers, its 1 % point and the FAR and recall at the
# accept point under a few shifts of the texture side, with EXTRA_RESULTS (e.g. RESULTS/cal-tex.jsonl) beside them.
# Figures: bench/README.md, "The bare-photo false-accept rate against catalog size".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/teaprint-texsizes}
CONFIG=${2:-pipeline/data/default.yaml}
shift $(( $# > 2 ? 2 : $# ))
PY=${PYTHON:-.venv/bin/python}
RESULTS=${RESULTS:-$OUT/results}
mkdir -p "$RESULTS"

evaluate() {  # size, seed
  local name="n$1-$2"
  [ -f "$OUT/$name/truth.csv" ] || nice "$PY" bench/make_textures.py "$OUT/$name" --seed "$2" --objects "$1" >/dev/null
  [ -n "${REUSE:-}" ] && [ -f "$RESULTS/$name.summary.json" ] && return
  nice "$PY" -m pipeline --config "$CONFIG" eval "$OUT/$name" --stages embedding+lbp+verify --json "$RESULTS/$name.jsonl" >/dev/null
}
for seed in $(seq 101 124); do evaluate 10 "$seed"; done
for seed in $(seq 201 206); do evaluate 40 "$seed"; done
cat "$RESULTS"/n10-*.jsonl > "$RESULTS/cal-tex10.jsonl"
cat "$RESULTS"/n40-*.jsonl > "$RESULTS/cal-tex40.jsonl"
"$PY" bench/shift_texture_experts.py "$RESULTS/cal-tex10.jsonl" "$RESULTS/cal-tex40.jsonl" "$@" --config "$CONFIG" \
  --shifts 0,-0.2,-0.4,-0.6
