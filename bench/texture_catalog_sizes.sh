#!/usr/bin/env bash
# The bare-photo decision's false-accept rate against catalog size: small relit-texture catalogs.
#
#   bench/texture_catalog_sizes.sh [OUT] [CONFIG] [EXTRA_RESULTS.jsonl...]
#
# The texture side's accept point is calibrated on cal-tex (300 registered relit surfaces, 400 stranger shots;
# bench/recalibrate.sh). This builds the same generator's catalogs at other sizes, each folder from its own seed
# (never the evaluation's seed 2 nor the calibration's seed 1): 24 folders of 10 surfaces (8 registered, 8 stranger
# shots each) and 6 folders of 40 (30 registered, 40 stranger shots), evaluates each with CONFIG (default: the
# shipped pipeline/data/default.yaml), pools the answers per size, and prints, with bench/shift_texture_experts.py,
# each size's bare strangers, its 1 % point and the FAR and recall at the accept point under a few shifts of the
# texture side; EXTRA_RESULTS (e.g. RESULTS/cal-tex.jsonl) are printed beside them. A folder already evaluated is
# reused. Figures: bench/README.md, "The bare-photo false-accept rate against catalog size".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/teaprint-texsizes}
CONFIG=${2:-pipeline/data/default.yaml}
shift $(( $# > 2 ? 2 : $# ))
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT/results"

evaluate() {  # size, seed
  local name="n$1-$2"
  [ -f "$OUT/$name/truth.csv" ] || nice "$PY" bench/make_textures.py "$OUT/$name" --seed "$2" --objects "$1" >/dev/null
  [ -f "$OUT/results/$name.summary.json" ] || nice "$PY" -m pipeline --config "$CONFIG" eval "$OUT/$name" \
    --stages embedding+lbp+verify --json "$OUT/results/$name.jsonl" >/dev/null
}
for seed in $(seq 101 124); do evaluate 10 "$seed"; done
for seed in $(seq 201 206); do evaluate 40 "$seed"; done
cat "$OUT"/results/n10-*.jsonl > "$OUT/size10.jsonl"
cat "$OUT"/results/n40-*.jsonl > "$OUT/size40.jsonl"
"$PY" bench/shift_texture_experts.py "$OUT/size10.jsonl" "$OUT/size40.jsonl" "$@" --config "$CONFIG" --shifts 0,-0.2,-0.4,-0.6
