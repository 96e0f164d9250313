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

demo: install
	$(VENV)/bin/recon3d run sfm --data data/demo --out $(OUT)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) out
