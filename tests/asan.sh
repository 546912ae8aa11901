#!/usr/bin/env bash
# The whole test suite under AddressSanitizer and UndefinedBehaviorSanitizer:
# the C unit tests built with sanitizers, then the extension built with them
# into its own venv and every pytest test run with libasan preloaded (CPython
# itself is not instrumented; PYTHONMALLOC=malloc lets ASan see every
# allocation). Leak checking is left to the C tests: an uninstrumented
# interpreter does not free everything at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-asan
SAN="address,undefined"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
"$VENV/bin/pip" install -q meson-python meson ninja
"$VENV/bin/pip" install -q -r tests/requirements.txt

# C unit tests (leak checking on).
if [ ! -f build/asan-c/build.ninja ]; then
    "$VENV/bin/meson" setup build/asan-c -Dtests=true -Dbuildtype=debug -Dwerror=true -Db_sanitize=$SAN \
        -Db_lundef=false
fi
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$VENV/bin/meson" test -C build/asan-c --print-errorlogs

# The extension with sanitizers, installed into the asan venv.
"$VENV/bin/pip" install -q --no-build-isolation --force-reinstall --no-deps \
    -Cbuild-dir=build/asan-ext \
    -Csetup-args=-Db_sanitize=$SAN -Csetup-args=-Db_lundef=false \
    -Csetup-args=-Dbuildtype=debug -Csetup-args=-Dwerror=true .

LIBASAN=$(cc -print-file-name=libasan.so)
export LD_PRELOAD="$LIBASAN"
export PYTHONMALLOC=malloc
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# Any sanitizer report aborts the server process, which the tests notice.
exec "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
