# The two commands of the README: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

.PHONY: install test test-slow demo lint clean

# torch first, pinned to the local CPU wheel; every later pip call is constrained to it so nothing
# can pull another torch (and gigabytes of CUDA) in behind our back.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test]'
	$(PIP) install -q -c constraints.txt --no-deps ultralytics==8.4.190  # its deps are ours, opencv-contrib kept
	$(PY) -m recon3d.radiance.native  # the C++ CPU kernels, built once per machine
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

# structure from motion on the demo photos (their poses set aside, then checked against ground_truth/), a short
# Gaussian training from its cameras and points, held-out renders scored, the report; it ends with the line
# that opens the viewer on it
demo: install
	$(VENV)/bin/recon3d splat --sfm --data data/demo --out $(OUT) --steps 1500

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) out
