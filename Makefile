# casgi: build, serve, test. `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test install venv ctest pytest clean bench fuzz asan format soak

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
	$(PY) -m pytest tests -q

test: ctest pytest

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
