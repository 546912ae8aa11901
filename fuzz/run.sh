#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan/UBSan) in build/fuzz and runs each
# for SECONDS (default 60) on a copy of its seed corpus. Exits non-zero when a
# target finds a crash. Usage: bash fuzz/run.sh [SECONDS]
set -euo pipefail
SECS=${1:-60}
cd "$(dirname "$0")/.."
TARGETS="http1_head http1_chunked"

# clang and the libFuzzer runtime (Debian: clang, libclang-rt-14-dev).
probe() {
    echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; return (int)(n & 0); }' |
        clang -x c -fsanitize=fuzzer,address,undefined -o /dev/null - >/dev/null 2>&1
}
if ! command -v clang >/dev/null 2>&1 || ! probe; then
    echo "fuzz: installing clang and libclang-rt-14-dev"
    apt-get update -qq
    apt-get install -y -qq clang libclang-rt-14-dev
fi

MESON=${MESON:-meson}
if ! command -v "$MESON" >/dev/null 2>&1; then
    MESON="python3 -m mesonbuild.mesonmain"
fi
if [ ! -f build/fuzz/build.ninja ]; then
    CC=clang $MESON setup build/fuzz -Dfuzz=true -Db_sanitize=address,undefined \
        -Db_lundef=false -Dbuildtype=debugoptimized
fi
$MESON compile -C build/fuzz

status=0
for t in $TARGETS; do
    run=fuzz/corpus-run/$t
    mkdir -p "$run" "build/fuzz/artifacts/$t"
    cp -n fuzz/corpus/$t/* "$run"/ 2>/dev/null || true
    echo "fuzz: $t for ${SECS}s"
    if ! ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
        UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1 \
        "build/fuzz/fuzz_$t" "$run" -dict=fuzz/http1.dict -max_len=65536 \
        -max_total_time="$SECS" -print_final_stats=1 \
        -artifact_prefix="build/fuzz/artifacts/$t/"; then
        echo "fuzz: $t FAILED (artifacts in build/fuzz/artifacts/$t/)"
        status=1
    fi
done
exit $status
