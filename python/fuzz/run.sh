#!/usr/bin/env bash
# Run one atheris harness under the ASan + UBSan build for a bounded time.
#   python/fuzz/run.sh PYTHON HARNESS SECONDS OUT_DIR [libFuzzer flags...]
# PYTHON: the interpreter of the sanitizer build (make test-asan sets it up);
# HARNESS: open_render or from_array_render. The corpus grows in
# OUT_DIR/corpus/HARNESS; a finding is written to OUT_DIR/crashes/HARNESS/,
# its path printed, and the exit status is non-zero.
set -uo pipefail
python=$1 harness=$2 seconds=$3 out=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
crashes=$out/crashes/$harness
mkdir -p "$out/corpus/$harness" "$crashes"
# atheris' clang ASan runtime with libFuzzer built in: the one runtime that
# both provides the sanitizers and keeps libFuzzer's coverage feedback (gcc's
# libasan would take over the coverage hooks; see README.md).
runtime=$("$python" -c "import atheris; print(atheris.path())")/asan_with_fuzzer.so
# One render thread: one core per fuzz process, and executions that do not
# depend on the machine's load.
export LD_PRELOAD=$runtime ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export OMP_NUM_THREADS=1
"$python" "$here/seeds.py" "$out/seeds" || exit 1
"$python" "$here/fuzz_$harness.py" "$out/corpus/$harness" "$out/seeds/$harness" \
  -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=4096 \
  -artifact_prefix="$crashes/" -print_final_stats=1 "$@"
status=$?
if ((status != 0)); then
  echo "FUZZ FINDING in $harness (exit $status); reproducer(s):"
  ls -1 "$crashes"/*
  echo "replay: LD_PRELOAD=$runtime ASAN_OPTIONS=detect_leaks=0 $python $here/fuzz_$harness.py FILE"
fi
exit $status
