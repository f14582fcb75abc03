# drive_segment_ros — one-command setup, tests, demo and benchmarks (see README.md).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Extras installed by `make setup`. A machine with ROS 2 from apt can drop `ros`:
#   make setup EXTRAS=train,onnx,dev
EXTRAS ?= train,onnx,dev,ros
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps venv test demo bench clean

setup: system-deps venv
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e ".[$(EXTRAS)]"
	$(PY) -c "import drive_segment_ros, drive_segment_training; print('drive_segment_ros installed')"

# open3d needs libusb; the rest are Debian packages that the pip wheels expect.
system-deps:
	@if ! ldconfig -p | grep -q libusb-1.0.so.0 || ! ldconfig -p | grep -q libgl.so.1 -i; then \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libusb-1.0-0 libgl1 libgomp1 >/dev/null; fi

venv:
	@[ -x $(PY) ] || python3 -m venv $(VENV)

# The test command CI runs (see README.md).
test:
	$(PY) -m pytest -q test

demo:
	$(VENV)/bin/drive-segment demo --out demo_out

bench:
	$(PY) bench/run_bench.py

clean:
	rm -rf demo_out proposals_out build install log .pytest_cache
