# casgi: build, serve, test. `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test install venv ctest pytest pytest-alt clean bench fuzz asan format soak

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

venv: $(PY)

install: venv
	$(PIP) install -q meson-python meson ninja
	$(PIP) install -q --no-build-isolation '.[standard]'

serve: install
	$(PIP) install -q -r examples/requirements.txt
	cd examples && ../$(VENV)/bin/casgi notes:app --reload --host $(HOST) --port $(PORT)

build/ctest/build.ninja: | venv
	$(PIP) install -q meson ninja
	$(VENV)/bin/meson setup build/ctest -Dtests=true -Dbuildtype=debug

ctest: build/ctest/build.ninja
	$(VENV)/bin/meson test -C build/ctest --print-errorlogs

pytest: install
	$(PIP) install -q -r tests/requirements.txt
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt-get install -y -qq nginx-light || echo "pytest: nginx could not be installed; the nginx proxy test will be skipped"
	$(PY) -m pytest tests -q

# The HTTP tests once more on a newer Python when one is installed (on PATH
# or under pyenv): from 3.12 on, app tasks start eagerly, a path the default
# interpreter may not take. ALT_PYTHON=... picks one; none found: skipped.
# Any interpreter and test set, e.g. the whole suite on 3.9:
#   make pytest-alt ALT_PYTHON=~/.pyenv/versions/3.9.18/bin/python3 ALT_TESTS=tests
ALT_PYTHON ?= $(firstword $(foreach v,3.13 3.12,$(shell command -v python$(v) >/dev/null 2>&1 && \
	python$(v) -c 'import sys' >/dev/null 2>&1 && echo python$(v))) \
	$(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3))
ALT_VENV = .venv-alt-$(shell $(ALT_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ALT_TESTS := tests/test_framing.py tests/test_receive_send.py tests/test_streaming.py \
	tests/test_scope.py tests/test_rejections.py tests/test_frameworks.py tests/test_shutdown.py \
	tests/test_gunicorn.py tests/test_django_quart.py

pytest-alt:
	@if [ -z "$(ALT_PYTHON)" ]; then echo "pytest-alt: no Python 3.12+ found, skipped"; exit 0; fi; \
	set -e; [ -x $(ALT_VENV)/bin/python ] || $(ALT_PYTHON) -m venv $(ALT_VENV); \
	$(ALT_VENV)/bin/python -m pip install -q meson-python meson ninja; \
	$(ALT_VENV)/bin/python -m pip install -q -r tests/requirements.txt; \
	$(ALT_VENV)/bin/python -m pip install -q --no-build-isolation '.[standard]'; \
	$(ALT_VENV)/bin/python -c 'import sys; print("pytest-alt: Python", sys.version.split()[0])'; \
	$(ALT_VENV)/bin/python -m pytest $(ALT_TESTS) -q

test: ctest pytest pytest-alt

clean:
	rm -rf build

# Benchmarks against uvicorn, granian, hypercorn and nginx; writes BENCHMARKS.md.
bench: install
	$(PY) bench/run.py

# libFuzzer targets (clang); FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz:
	bash fuzz/run.sh $(FUZZ_SECONDS)

# The whole test suite with the extension and core built under ASan/UBSan.
asan:
	bash tests/asan.sh

format:
	clang-format -i src/core/*.[ch] src/bind/*.[ch] tests/c/*.[ch] fuzz/*.c

# 5 million requests through one server; fails when RSS grows over 1 MiB after warm-up.
soak: install
	@command -v wrk >/dev/null || apt-get install -y wrk
	$(PY) bench/soak.py
