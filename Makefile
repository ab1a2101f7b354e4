# Two entry points (see README): `make demo` and `make test`. Each sets up what it needs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.micro_sym_installed
APT_PACKAGES := xvfb xauth libgl1 libegl1 libdbus-1-3 libfontconfig1 libglib2.0-0 \
	libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
	libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 libxcb-xkb1

.PHONY: demo test setup apt bench clean

setup: $(STAMP)

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | apt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned to the local CPU wheel; an unpinned torch would pull CUDA builds.
	$(BIN)/python -m pip install -q "torch==2.13.0" "numpy<2"
	$(BIN)/python -m pip install -q -e ".[napari,export,dev]"
	# escnn without py3nj (needs Fortran; escnn falls back to a numerical method).
	$(BIN)/python -m pip install -q --no-deps "escnn==1.0.11"
	touch $(STAMP)

demo: setup
	$(BIN)/python -m micro_sym.demo --out demo_output

# One pytest worker per CPU (pytest-xdist), each test module whole on one worker (its fixtures built
# once); then the napari tests alone: beside another busy worker, napari's OpenGL canvas under xvfb
# now and then has no current context.
test: setup
	QT_QPA_PLATFORM=offscreen xvfb-run -a -s "-screen 0 1280x1024x24" \
	  $(BIN)/python -m pytest -q tests -n logical --dist loadfile --ignore=tests/plugins
	QT_QPA_PLATFORM=offscreen xvfb-run -a -s "-screen 0 1280x1024x24" \
	  $(BIN)/python -m pytest -q tests/plugins

# Timed benchmarks only (bench/bench_*.py); studies and provenance scripts are run by hand (bench/README.md).
bench: setup
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) demo_output
