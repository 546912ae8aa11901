#!/usr/bin/env bash
# A build without an optional library (meson -Dtls=disabled for OpenSSL,
# -Dhttp2=disabled for nghttp2) still builds, passes its C tests, and the
# options that need the missing library exit 2 with one line saying it is not
# available, while the rest still start (--no-http2 is accepted). Which
# libraries the build lacks is read from its cg_build.h; a build lacking none
# is an error (the cell would check nothing).
# Usage: tests/check_without.sh BUILD_DIR PYTHON
set -euo pipefail
build=$(cd "$1" && pwd)
python="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
cd "$(dirname "$0")/.."
so=$(ls "$build"/_casgi*.so)
pkg=$(mktemp -d)
trap 'rm -rf "$pkg"' EXIT
mkdir "$pkg/casgi"
cp casgi/*.py "$pkg/casgi/"
cp "$so" "$pkg/casgi/"
printf 'async def app(scope, receive, send):\n    pass\n' > "$pkg/app.py"

lacks() { grep -q "^#define $1 0\$" "$build/cg_build.h"; }

# expect STATUS NEEDLE [VAR=VALUE ...] -- ARGS...: casgi run with ARGS (and
# the variables) exits STATUS with NEEDLE in its output.
expect() {
    local want=$1 needle=$2 vars=() out status
    shift 2
    while [ "$1" != "--" ]; do vars+=("$1"); shift; done
    shift
    set +e
    out=$(cd "$pkg" && env PYTHONPATH="$pkg" "${vars[@]}" "$python" -m casgi "$@" 2>&1)
    status=$?
    set -e
    if [ "$status" -ne "$want" ] || ! grep -qF -- "$needle" <<<"$out"; then
        echo "check_without: ${vars[*]:+${vars[*]} }casgi $*: expected exit $want and '$needle', got $status:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "check_without: ${vars[*]:+${vars[*]} }casgi $*: exit $status, '$(grep -oF -- "$needle" <<<"$out" | head -1)'"
}

checked=0
if lacks CG_HAVE_TLS; then
    expect 2 "TLS is not available: casgi was built without OpenSSL" -- app:app --ssl-certfile /nonexistent.pem
    checked=1
fi
if lacks CG_HAVE_NGHTTP2; then
    no_h2="HTTP/2 is not available: casgi was built without nghttp2 (install libnghttp2-dev and reinstall, or drop --http2)"
    expect 2 "$no_h2" -- app:app --http2
    expect 2 "$no_h2" CASGI_HTTP2=1 -- app:app
    # Accepted: parsing succeeds and startup gets as far as the app lookup.
    expect 3 'Attribute "no_such_app" not found' -- app:no_such_app --no-http2
    checked=1
fi
if [ "$checked" = 0 ]; then
    echo "check_without: $build has every optional library (cg_build.h); nothing to check" >&2
    exit 1
fi
