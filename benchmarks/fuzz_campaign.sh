#!/usr/bin/env bash
# A long fuzz campaign (issue 9): one harness under the ASan + UBSan build until
# it has run for at least SECONDS and EXECUTIONS in all, restarted after every
# finding (libFuzzer stops at the first; its fork mode cannot re-run a Python
# harness), then the totals.
#   benchmarks/fuzz_campaign.sh PYTHON HARNESS SECONDS EXECUTIONS OUT_DIR > LOG 2>&1
# PYTHON: build/asan/venv/bin/python (made by `make test-asan`). Figures are
# recorded in docs/benchmarks.md, "Fuzzing".
set -uo pipefail
python=$1 harness=$2 seconds=$3 target=$4 out=$5
here=$(cd "$(dirname "$0")/.." && pwd)
date -u +"start %FT%TZ"
runs=0 executions=0
mkdir -p "$out"
while ((SECONDS < seconds || executions < target)); do
  started=$SECONDS
  budget=$((seconds - SECONDS > 300 ? seconds - SECONDS : 300))
  "$here/python/fuzz/run.sh" "$python" "$harness" "$budget" "$out" 2>&1 | tee "$out/last-run.log"
  count=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/last-run.log")
  executions=$((executions + ${count:-0}))
  runs=$((runs + 1))
  echo "campaign so far: $SECONDS s, $runs run(s), $executions executions"
  ((SECONDS - started >= 5)) || { echo "campaign: a run ended at once, stopping"; break; }
done
date -u +"end %FT%TZ"
echo "campaign: $harness, $SECONDS s, $runs libFuzzer run(s), $executions executions"
echo "findings: $(ls "$out/crashes/$harness" | wc -l) file(s) in $out/crashes/$harness"
ls -1 "$out/crashes/$harness"
