#!/usr/bin/env bash
# Scores vigil's streaming anomaly detector on the Numenta Anomaly Benchmark with NAB's own
# scorer (vendored with its 58 data files in scripts/nab, MIT; nothing is fetched but NAB's
# Python dependencies from PyPI). Prints the standard, low-FP and low-FN scores beside the
# published ones. Takes about two minutes after the build.
#
#   scripts/nab.sh                 # builds vigil in release
#   VIGIL=path/to/vigil scripts/nab.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
if [[ -z "${VIGIL:-}" ]]; then
  cargo build --release --bin vigil --manifest-path "$repo/Cargo.toml"
  VIGIL="${CARGO_TARGET_DIR:-$repo/target}/release/vigil"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$here/nab/." "$work/"
python3 -m venv "$work/.venv"
# NAB's scorer predates pandas 2 (it writes through views that copy-on-write makes read-only).
"$work/.venv/bin/pip" install --quiet "pandas==1.5.3" "numpy<2" simplejson python-dateutil
cd "$work"
for file in data/*/*.csv; do
  category="$(basename "$(dirname "$file")")"
  name="$(basename "$file")"
  mkdir -p "results/vigil/$category"
  "$VIGIL" eval csv "$file" > "results/vigil/$category/vigil_$name"
done
# The null detector is NAB's baseline for normalizing (a constant 0.5 everywhere).
.venv/bin/python run.py -d null --detect --skipConfirmation > /dev/null
.venv/bin/python run.py -d null,vigil --optimize --score --normalize --skipConfirmation \
  | grep "^Final score for 'vigil'"
echo "threshold per profile (NAB's optimizer):"
.venv/bin/python -c 'import json
for profile, best in json.load(open("config/thresholds.json"))["vigil"].items():
    print("  %s: %.4f" % (profile, best["threshold"]))'
echo "published (results/final_results.json of NAB):"
.venv/bin/python -c 'import json
r = json.load(open("'"$here"'/nab/results/final_results.json"))
for d, s in sorted(r.items(), key=lambda kv: -kv[1]["standard"]):
    print("  %-18s standard %6.2f  low FP %6.2f  low FN %6.2f" % (d, s["standard"], s["reward_low_FP_rate"], s["reward_low_FN_rate"]))'
