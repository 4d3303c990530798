#!/usr/bin/env bash
# run_sanitizers.sh - the whole test suite with the C core built under
# AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   scripts/run_sanitizers.sh [PYTEST ARGS...]     (from anywhere)
#
# 1. Builds the core in place with KSM_ENGINE_SANITIZE=1 (ksm_engine/
#    _build_core.py: -fsanitize=address,undefined -fno-sanitize-recover
#    -O1 -g), so any UBSan finding aborts like an ASan one.
# 2. Runs `python -m pytest` over tests/ (the benchmarks are not collected:
#    they live in benchmarks/ and --benchmark-skip is in the pytest config)
#    with the sanitizer runtimes preloaded: the interpreter is not built
#    with ASan, so libasan must come first in LD_PRELOAD.  CPython leaks
#    by design (interned objects, static types) so LeakSanitizer is off.
#    allocator_may_return_null=1 keeps Python's MemoryError paths as they
#    are (a huge request gets NULL, not an abort).  handle_segv=0 leaves a
#    plain segfault to the process (tests/core/test_core_boundary_machine.py provokes
#    one on purpose in a forked child to test its harness; any other one
#    still fails the run: the test that caused it fails).  Subprocesses
#    the tests start (the CLI) inherit all of it.
# 3. Rebuilds the normal core, whatever happened (trap EXIT).
#
# Every sanitizer report, from any process, goes to a log directory
# ($SANITIZER_LOG_DIR, default a fresh temporary one) and is printed at the
# end.  Exit code: pytest's if it failed, else 1 if any report was written,
# else 0.
#
# The package is rebuilt in place: other runs of the suite in the same tree
# meanwhile would load the sanitized core without its runtime and fail to
# import it.  Run it in a copy of the tree when others share it.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CC="${CC:-gcc}"
LOG_DIR="${SANITIZER_LOG_DIR:-$(mktemp -d -t ksm-engine-sanitizers.XXXXXX)}"
mkdir -p "$LOG_DIR"
cd "$ROOT"

rebuild_normal() {
    echo "run_sanitizers: rebuilding the normal core" >&2
    env -u KSM_ENGINE_SANITIZE "$PYTHON" ksm_engine/_build_core.py >/dev/null 2>&1 ||
        echo "run_sanitizers: WARNING: the normal rebuild failed; run: $PYTHON ksm_engine/_build_core.py" >&2
}
trap rebuild_normal EXIT

ASAN_LIB="$("$CC" -print-file-name=libasan.so)"
UBSAN_LIB="$("$CC" -print-file-name=libubsan.so)"
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
    if [ ! -e "$lib" ]; then
        echo "run_sanitizers: $CC has no $(basename "$lib") (install its sanitizer runtimes)" >&2
        exit 2
    fi
done

echo "run_sanitizers: building the core with ASan+UBSan" >&2
if ! KSM_ENGINE_SANITIZE=1 "$PYTHON" ksm_engine/_build_core.py >"$LOG_DIR/build.log" 2>&1; then
    cat "$LOG_DIR/build.log" >&2
    exit 2
fi
SO="ksm_engine/_core$("$PYTHON" -c 'import importlib.machinery as m; print(m.EXTENSION_SUFFIXES[0])')"
if ! ldd "$SO" | grep -q libasan; then
    echo "run_sanitizers: the core is not linked with libasan" >&2
    exit 2
fi

start=$(date +%s)
echo "run_sanitizers: running the test suite (reports go to $LOG_DIR)" >&2
LD_PRELOAD="$ASAN_LIB $UBSAN_LIB${LD_PRELOAD:+ $LD_PRELOAD}" \
ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:handle_segv=0:abort_on_error=1:halt_on_error=1:log_path=$LOG_DIR/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$LOG_DIR/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" -m pytest -p no:cacheprovider "$@"
status=$?
echo "run_sanitizers: pytest exit $status after $(( $(date +%s) - start )) s" >&2

reports=$(find "$LOG_DIR" -name 'asan.*' -o -name 'ubsan.*' | sort)
if [ -n "$reports" ]; then
    for f in $reports; do
        echo "===== $f" >&2
        cat "$f" >&2
    done
    echo "run_sanitizers: $(echo "$reports" | wc -l) sanitizer report(s)" >&2
    [ "$status" -eq 0 ] && status=1
else
    echo "run_sanitizers: no sanitizer report" >&2
fi
exit "$status"
