# Sourced by tools/fuzz-smoke and tools/fuzz-long (POSIX sh).

FUZZ_TARGETS="fuzz-mpscan fuzz-params fuzz-record fuzz-client-path fuzz-admin-path"
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
SUMMARY=$(mktemp)
trap 'rm -f "$SUMMARY"' EXIT

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

fuzz_build() {
        if ! command -v clang >/dev/null 2>&1; then
                echo "fuzz: clang is not installed (tools/install-deps installs it)" >&2
                return 1
        fi
        if [ ! -f "$BUILD/build.ninja" ]; then
                CC=clang meson setup "$BUILD" -Dfuzz=true -Db_sanitize=address,undefined \
                        -Db_lundef=false >"$BUILD.setup.log" 2>&1 || {
                        cat "$BUILD.setup.log" >&2
                        return 1
                }
        fi
        # only the fuzz targets: the rest of the tree may not build with clang
        ninja -C "$BUILD" $(for t in "$@"; do echo "tests/fuzz/$t"; done)
}

# Per-target libFuzzer limits: the largest input worth trying, and a memory
# ceiling low enough that an allocation sized by a declared length is caught.
fuzz_flags() {
        dict=-dict=tests/fuzz/vmmd.dict
        case $1 in
        fuzz-mpscan) echo "-max_len=70000 -malloc_limit_mb=64 -timeout=25" ;;
        fuzz-params) echo "-max_len=8192 -malloc_limit_mb=64 -timeout=25 $dict" ;;
        fuzz-record) echo "-max_len=17000 -malloc_limit_mb=64 -timeout=25 $dict" ;;
        *) echo "-max_len=8192 -malloc_limit_mb=512 -timeout=120 $dict" ;;
        esac
}

# fuzz_run TARGET SECONDS JOBS
fuzz_run() {
        t=$1
        secs=$2
        jobs=$3
        work="$BUILD/fuzz-corpus/$t"
        art="$BUILD/fuzz-artifacts/$t"
        log="$BUILD/fuzz-logs/$t.log"
        mkdir -p "$work" "$art" "$(dirname "$log")"
        seeds=""
        for d in tests/fuzz/corpus/$t tests/fuzz/regressions/$t; do
                [ -d "$d" ] && seeds="$seeds $d"
        done
        par=""
        [ "$jobs" -gt 1 ] && par="-fork=$jobs -ignore_crashes=0"
        echo "=== $t: ${secs}s ($log)"
        # shellcheck disable=SC2046,SC2086
        "$BUILD/tests/fuzz/$t" $(fuzz_flags "$t") -rss_limit_mb=2048 -max_total_time="$secs" \
                -print_final_stats=1 -artifact_prefix="$art/" $par ${FUZZ_ARGS:-} \
                "$work" $seeds >"$log" 2>&1
        rc=$?
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
        if [ $rc -eq 0 ]; then
                result=ok
        else
                result="FAILED (exit $rc)"
                grep -E 'ERROR:|invariant failed|runtime error|SUMMARY:|Test unit written' "$log" \
                        | head -8 >&2
        fi
        printf '%-18s %6ss %10s execs %7s/s  cov %-6s %s\n' "$t" "$secs" "${execs:-?}" \
                "${rate:-?}" "${cov:-?}" "$result" >>"$SUMMARY"
        [ $rc -eq 0 ]
}

fuzz_summary() {
        echo "=== fuzz summary"
        cat "$SUMMARY"
        # FUZZ_RESULTS: a copy of the table for tools/test-summary
        [ -n "${FUZZ_RESULTS:-}" ] && cp "$SUMMARY" "$FUZZ_RESULTS"
        if grep -q FAILED "$SUMMARY"; then
                echo "fuzz: $(grep -c FAILED "$SUMMARY") target(s) failed; inputs in $BUILD/fuzz-artifacts/"
        fi
}
