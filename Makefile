# drive_segment_ros — one-command setup, tests, demo and benchmarks (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Extras installed by `make setup`. A machine with ROS 2 from apt can drop `ros`:
#   make setup EXTRAS=train,onnx,dev,scale
EXTRAS ?= train,onnx,dev,ros,scale
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps venv test contract demo bench bench-scale clean

setup: system-deps venv
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e ".[$(EXTRAS)]"
	$(PY) -c "import drive_segment_ros, drive_segment_training; print('drive_segment_ros installed')"

# open3d needs libusb; libgl1/libgomp1 are Debian packages that the pip wheels expect; chromium
# (headless) lets test/test_report.py check that every image of an HTML report decodes in a real
# browser (the test skips with a message where chromium is missing). Needs apt; elsewhere install
# the equivalents yourself.
SYSTEM_LIBS := libusb-1.0-0 libgl1 libgomp1
system-deps:
	@if ! command -v apt-get >/dev/null; then \
	  echo "system-deps: no apt-get here; install $(SYSTEM_LIBS) and chromium yourself"; exit 0; fi; \
	if ! ldconfig -p | grep -q libusb-1.0.so.0 || ! ldconfig -p | grep -q libgl.so.1 -i \
	   || ! command -v chromium >/dev/null; then \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(SYSTEM_LIBS) chromium >/dev/null; fi

venv:
	@[ -x $(PY) ] || python3 -m venv $(VENV)

# The test command CI runs (see README.md). It includes the import contract (test/test_architecture.py).
test:
	$(PY) -m pytest -q test

# The import contract alone (.importlinter; core -/-> adapters -/-> offline), with lint-imports' report.
contract:
	$(VENV)/bin/lint-imports --no-cache

demo:
	$(VENV)/bin/drive-segment demo --out demo_out

bench:
	$(PY) bench/run_bench.py

# Issue 9 scale benchmark (not part of the tests): a long drive generated from the real frames
# (mcap + /tf), pseudo-label frames/s per stage, peak RSS at 200/1000/2000 frames, bytes per image,
# Ray 1 vs 2 workers, DDP 1 vs 2 processes. Short run: make bench-scale BENCH_SCALE_ARGS="--frames 20,50,100
# --ray-frames 24 --ddp-iters 6". Ray comes with the `scale` extra (pip install -e ".[scale]").
BENCH_SCALE_ARGS ?=
bench-scale:
	OMP_NUM_THREADS=1 $(PY) bench/bench_scale.py $(BENCH_SCALE_ARGS)

clean:
	rm -rf demo_out proposals_out build install log .pytest_cache
