#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan/UBSan) in build/fuzz and runs each
# for SECONDS (default 60) on a copy of its seed corpus in fuzz/corpus-run/.
# Exits non-zero when a target finds a crash (reproducer in
# build/fuzz/artifacts/<target>/).
# Usage: bash fuzz/run.sh [SECONDS]; FUZZ_TARGETS="http1_head ..." picks targets
# (default: every fuzz/fuzz_*.c).
# fuzz/corpus/<target> is what CI starts from: the seeds plus what longer runs
# found, minimised (kept to a few hundred KB in all) after a long run with
#   build/fuzz/fuzz_T -set_cover_merge=1 -max_len=65536 NEW fuzz/corpus/T fuzz/corpus-run/T
# and NEW committed as fuzz/corpus/T.
set -euo pipefail
SECS=${1:-60}
cd "$(dirname "$0")/.."

# clang and the libFuzzer runtime (Debian: clang, libclang-rt-14-dev).
probe() {
    echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; return (int)(n & 0); }' |
        clang -x c -fsanitize=fuzzer,address,undefined -o /dev/null - >/dev/null 2>&1
}
if ! command -v clang >/dev/null 2>&1 || ! probe; then
    echo "fuzz: installing clang and libclang-rt-14-dev"
    apt-get update -qq
    apt-get install -y -qq clang libclang-rt-14-dev
    probe || { echo "fuzz: clang cannot link -fsanitize=fuzzer" >&2; exit 2; }
fi

# meson and ninja: the project venv (as `make` sets it up), else PATH, else
# a fresh venv.
if [ -x .venv/bin/meson ]; then
    export PATH="$PWD/.venv/bin:$PATH"
elif ! command -v meson >/dev/null 2>&1 || ! command -v ninja >/dev/null 2>&1; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q meson ninja
    export PATH="$PWD/.venv/bin:$PATH"
fi
if [ ! -f build/fuzz/build.ninja ]; then
    CC=clang meson setup build/fuzz -Dfuzz=true -Dwerror=true -Db_sanitize=address,undefined \
        -Db_lundef=false -Dbuildtype=debugoptimized
fi
meson compile -C build/fuzz

if [ -n "${FUZZ_TARGETS:-}" ]; then
    targets=$FUZZ_TARGETS
else
    targets=$(for f in fuzz/fuzz_*.c; do f=${f#fuzz/fuzz_}; echo "${f%.c}"; done)
fi

status=0
for t in $targets; do
    if [ ! -x "build/fuzz/fuzz_$t" ]; then
        # fuzz_tls is built only when meson found OpenSSL (libssl-dev),
        # fuzz_h2 only when it found nghttp2 (libnghttp2-dev).
        echo "fuzz: $t not built (missing build dependency), skipped"
        continue
    fi
    run=fuzz/corpus-run/$t
    mkdir -p "$run" "build/fuzz/artifacts/$t"
    if [ -d "fuzz/corpus/$t" ]; then
        cp -n "fuzz/corpus/$t"/* "$run"/ 2>/dev/null || true
    fi
    # Dictionary: fuzz/<target>.dict, else the one of its family (http1_head -> http1.dict).
    dict=()
    for d in "fuzz/$t.dict" "fuzz/${t%%_*}.dict"; do
        if [ -f "$d" ]; then
            dict=("-dict=$d")
            break
        fi
    done
    echo "fuzz: $t for ${SECS}s"
    if ! ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
        UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1 \
        "build/fuzz/fuzz_$t" "$run" ${dict[@]+"${dict[@]}"} -max_len=65536 \
        -max_total_time="$SECS" -print_final_stats=1 \
        -artifact_prefix="build/fuzz/artifacts/$t/"; then
        echo "fuzz: $t FAILED (artifacts in build/fuzz/artifacts/$t/)"
        status=1
    fi
done
exit $status
