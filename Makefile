# casgi: build, serve, test. `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test install venv ctest pytest pytest-alt pytest-versions alt-version clean bench fuzz asan \
	format format-check build-matrix tools build-deps test-tools soak

# Warnings are errors in the project's own builds (these targets, tests/asan.sh,
# fuzz/run.sh); meson.build leaves werror off so a user's `pip install .` never
# fails on a new compiler's warning.
WERROR_PIP := -Csetup-args=-Dwerror=true
WERROR_MESON := -Dwerror=true

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: $(PY)

install: venv build-deps
	$(PIP) install -q meson-python meson ninja
	$(PIP) install -q --no-build-isolation $(WERROR_PIP) '.[standard]'

serve: install
	$(PIP) install -q -r examples/requirements.txt
	cd examples && ../$(VENV)/bin/casgi notes:app --reload --host $(HOST) --port $(PORT)

build/ctest/build.ninja: | venv build-deps
	$(PIP) install -q meson ninja
	$(VENV)/bin/meson setup build/ctest -Dtests=true -Dbuildtype=debug $(WERROR_MESON)

ctest: build/ctest/build.ninja
	$(VENV)/bin/meson test -C build/ctest --print-errorlogs

pytest: install test-tools
	$(PIP) install -q -r tests/requirements.txt
	$(PY) -m pytest tests -q

# The HTTP tests once more on a newer Python when one is installed (on PATH
# or under pyenv): from 3.12 on, app tasks start eagerly, a path the default
# interpreter may not take. ALT_PYTHON=... picks one; none found: skipped.
# Any interpreter and test set, e.g. the whole suite on 3.9:
#   make pytest-alt ALT_PYTHON=~/.pyenv/versions/3.9.18/bin/python3 ALT_TESTS=tests
ALT_PYTHON ?= $(firstword $(foreach v,3.13 3.12,$(shell command -v python$(v) >/dev/null 2>&1 && \
	python$(v) -c 'import sys' >/dev/null 2>&1 && echo python$(v))) \
	$(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3))
ALT_VERSION = $(shell $(ALT_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ALT_VENV = .venv-alt-$(ALT_VERSION)
ALT_TESTS := tests/test_framing.py tests/test_receive_send.py tests/test_streaming.py \
	tests/test_scope.py tests/test_rejections.py tests/test_frameworks.py tests/test_shutdown.py \
	tests/test_gunicorn.py tests/test_django_quart.py tests/test_cancellation.py \
	tests/test_tls_transport.py

pytest-alt: build-deps
	@if [ -z "$(ALT_PYTHON)" ]; then echo "pytest-alt: no Python 3.12+ found, skipped"; exit 0; fi; \
	set -e; [ -x $(ALT_VENV)/bin/python ] || { $(ALT_PYTHON) -m venv $(ALT_VENV) && \
		$(ALT_VENV)/bin/python -m pip install -q --upgrade pip; }; \
	$(ALT_VENV)/bin/python -m pip install -q meson-python meson ninja; \
	$(ALT_VENV)/bin/python -m pip install -q -r tests/requirements.txt; \
	$(ALT_VENV)/bin/python -m pip install -q --no-build-isolation $(WERROR_PIP) '.[standard]'; \
	$(ALT_VENV)/bin/python -c 'import sys; print("pytest-alt: Python", sys.version.split()[0])'; \
	$(ALT_VENV)/bin/python -m pytest $(ALT_TESTS) -q

test: ctest pytest pytest-alt

# The X.Y pytest-alt picks by default (empty when none): .ci/run skips it in pytest-versions.
alt-version:
	@echo $(ALT_VERSION)

# A test subset on each other supported Python (the default interpreter runs
# the whole suite in `pytest`): pythonX.Y on PATH when it runs, else pyenv's.
# A missing interpreter is an error: PY_VERSIONS=... narrows the list. The
# subset drives the extension's HTTP and WebSocket ASGI, lifespan, shutdown,
# framework and casgi.run paths; the parser tests are left to the default
# interpreter, the core being the same C on every version. VERSION_TESTS=tests
# runs everything.
PY_VERSIONS ?= 3.9 3.10 3.12 3.13
VERSION_TESTS ?= tests/test_receive_send.py tests/test_scope.py tests/test_frameworks.py \
	tests/test_shutdown.py tests/test_lifespan.py tests/test_ws_handshake.py \
	tests/test_django_quart.py tests/test_run_api.py tests/test_cancellation.py \
	tests/test_tls_transport.py
pytest-versions:
	@set -e; for v in $(PY_VERSIONS); do \
		p=; for c in python$$v $$(ls -d $(HOME)/.pyenv/versions/$$v.*/bin/python3 2>/dev/null); do \
			if $$c -c 'import sys' >/dev/null 2>&1; then p=$$c; break; fi; done; \
		if [ -z "$$p" ]; then echo "pytest-versions: no Python $$v (PY_VERSIONS=... to narrow)" >&2; exit 1; fi; \
		$(MAKE) --no-print-directory pytest-alt ALT_PYTHON=$$p ALT_TESTS="$(VERSION_TESTS)"; \
	done

# Debian packages the build needs, installed when missing: pkg-config,
# OpenSSL's headers (libssl-dev) for TLS and nghttp2's (libnghttp2-dev) for
# HTTP/2. Without them the build still works, without TLS or HTTP/2 (the
# --ssl-* options and --http2 then exit 2 saying so), hence only a warning
# when they cannot be installed (not root, not Debian).
build-deps:
	@missing=; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	for dep in "libssl-dev:openssl >= 3.0" "libnghttp2-dev:libnghttp2 >= 1.52"; do \
		deb=$${dep%%:*}; pc=$${dep#*:}; \
		if command -v dpkg >/dev/null 2>&1; then \
			dpkg -s $$deb >/dev/null 2>&1 || missing="$$missing $$deb"; \
		elif ! pkg-config --exists "$$pc" 2>/dev/null; then \
			missing="$$missing $$deb"; \
		fi; \
	done; \
	if [ -n "$$missing" ]; then echo "build-deps: installing$$missing"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } || \
		echo "build-deps: WARNING: could not install$$missing; casgi builds without TLS or HTTP/2"; fi

# Debian packages the tests use, installed when missing: nginx (the proxy
# test), haproxy (the PROXY protocol test), curl (TLS and HTTP/2 interop),
# nghttp2-client (nghttp and h2load), chromium (a real browser over TLS:
# tests/test_browser.py) and systemd (systemd-socket-activate, as a launcher
# only: no systemd runs).
# A test whose tool is missing is skipped, hence only a warning.
test-tools:
	@missing=; \
	{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing="$$missing nginx-light"; \
	{ command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; } || missing="$$missing haproxy"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	{ command -v nghttp >/dev/null 2>&1 && command -v h2load >/dev/null 2>&1; } || \
		missing="$$missing nghttp2-client"; \
	{ command -v chromium >/dev/null 2>&1; } || missing="$$missing chromium"; \
	command -v systemd-socket-activate >/dev/null 2>&1 || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then echo "test-tools: installing$$missing"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } || \
		echo "test-tools: WARNING: could not install$$missing; the tests that need them are skipped"; fi

# Debian packages the C tooling needs, installed when missing: clang and the
# libFuzzer runtime (build-matrix, fuzz), clang-format (format-check).
tools:
	@missing=; \
	command -v clang >/dev/null 2>&1 || missing="$$missing clang libclang-rt-14-dev"; \
	command -v clang-format >/dev/null 2>&1 || missing="$$missing clang-format"; \
	if [ -n "$$missing" ]; then echo "tools: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# The core, the extension and the C unit tests with gcc and clang at -O0, -O2
# and -O3, warnings as errors (optimisation levels change what the compilers
# warn about); each cell runs the C unit tests. MATRIX_CC/MATRIX_OPT narrow it.
# Two more cells build without an optional library, OpenSSL (notls) and nghttp2
# (noh2), and check that the options needing it say so (tests/check_without.sh).
MATRIX_CC ?= gcc clang
MATRIX_OPT ?= 0 2 3
MATRIX_WITHOUT ?= notls:-Dtls=disabled noh2:-Dhttp2=disabled
build-matrix: tools build-deps venv
	$(PIP) install -q meson ninja
	@set -e; for cc in $(MATRIX_CC); do for opt in $(MATRIX_OPT); do \
		d=build/matrix-$$cc-O$$opt; echo "build-matrix: $$cc -O$$opt"; \
		[ -f $$d/build.ninja ] || CC=$$cc $(VENV)/bin/meson setup $$d -Dtests=true \
			-Doptimization=$$opt -Ddebug=false $(WERROR_MESON) >/dev/null; \
		$(VENV)/bin/meson compile -C $$d >/dev/null || { $(VENV)/bin/meson compile -C $$d; exit 1; }; \
		$(VENV)/bin/meson test -C $$d --print-errorlogs -q; \
	done; done
	@set -e; for cell in $(MATRIX_WITHOUT); do \
		name=$${cell%%:*}; opt=$${cell#*:}; d=build/matrix-$$name; \
		echo "build-matrix: gcc -O2 $$opt"; \
		[ -f $$d/build.ninja ] || CC=gcc $(VENV)/bin/meson setup $$d -Dtests=true $$opt \
			-Doptimization=2 -Ddebug=false $(WERROR_MESON) >/dev/null; \
		$(VENV)/bin/meson compile -C $$d >/dev/null || { $(VENV)/bin/meson compile -C $$d; exit 1; }; \
		$(VENV)/bin/meson test -C $$d --print-errorlogs -q; \
		bash tests/check_without.sh $$d $(PY); \
	done

clean:
	rm -rf build

# Benchmarks against uvicorn, granian, h2corn, hypercorn and nginx; writes BENCHMARKS.md.
# wrk, h2load (nghttp2-client, the HTTP/2 rows) and nginx come from Debian.
bench: install
	@command -v wrk >/dev/null || apt-get install -y wrk || \
		{ apt-get update && apt-get install -y wrk; }
	@command -v h2load >/dev/null || apt-get install -y nghttp2-client || \
		{ apt-get update && apt-get install -y nghttp2-client; }
	$(PY) bench/run.py

# libFuzzer targets (clang); FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz: tools build-deps
	bash fuzz/run.sh $(FUZZ_SECONDS)

# The whole test suite with the extension and core built under ASan/UBSan.
asan: build-deps
	bash tests/asan.sh

FORMAT_FILES = src/core/*.[ch] src/bind/*.[ch] tests/c/*.[ch] fuzz/*.c

format:
	clang-format -i $(FORMAT_FILES)

# Fails, listing the differences, when a C file is not formatted as .clang-format says.
format-check: tools
	clang-format --dry-run --Werror $(FORMAT_FILES)

# 5 million requests through one server; fails when RSS grows over 1 MiB after warm-up.
soak: install
	@command -v wrk >/dev/null || apt-get install -y wrk
	$(PY) bench/soak.py
