#!/usr/bin/env bash
# A build without OpenSSL (meson -Dtls=disabled) still builds, passes its C
# tests, and a --ssl-* option exits 2 with a line saying TLS
# is not available. Usage: tests/check_notls.sh BUILD_DIR PYTHON
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
set +e
out=$(cd "$pkg" && PYTHONPATH="$pkg" "$python" -m casgi app:app --ssl-certfile /nonexistent.pem 2>&1)
status=$?
set -e
if [ "$status" -ne 2 ] || ! grep -q "TLS is not available" <<<"$out"; then
    echo "check_notls: expected exit 2 and 'TLS is not available', got $status:" >&2
    echo "$out" >&2
    exit 1
fi
echo "check_notls: --ssl-certfile on a build without OpenSSL: exit 2, '$(grep -o 'TLS is not available[^(]*' <<<"$out" | head -1)'"
