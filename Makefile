# `make test` builds .venv from the repo alone (fresh clone included) and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# test processes (pytest-xdist, one test file each at a time): the cores, at most 4 (each loads torch
# and runs tiny trainings in subprocesses); JOBS=1 runs the suite in one process
JOBS ?= $(shell $(PYTHON) -c "import os; print(min(4, os.cpu_count() or 1))")

.PHONY: test lint clean-venv gpu-check

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# On a CUDA machine (about 3-5 min on one H100): the tests marked cuda, the translation bench, fused
# (cuDNN) = cells, a short bf16-mixed fit of every task; one table, non-zero exit if a check failed.
# Without a GPU it says so and exits 0. The CPU form: $(PY) -m seqcap.gpu_check --device cpu --quick
gpu-check: $(STAMP)
	$(PY) -m seqcap.gpu_check

clean-venv:
	rm -rf $(VENV)

.PHONY: serve-demo
# Serve the quickstarts' checkpoints (runs/quickstart*, made by the targets below; trains nothing) with
# the demo page at http://127.0.0.1:8000/; says which target makes a missing one. Stop with Ctrl-C.
serve-demo: $(STAMP)
	$(PY) -m seqcap serve --quickstart

.PHONY: quickstart quickstart-translation quickstart-captioning
# The main job, both tasks on real pretrained pieces and offline data (about 15 minutes on a 2-core CPU).
quickstart: quickstart-translation quickstart-captioning

# Build the gettext en-de corpus, train the attention translator (6 epochs, about 7 minutes), print test
# BLEU beside the copy baseline and example translations.
quickstart-translation: $(STAMP)
	$(PY) -m seq2seq.translation.quickstart

# Draw a small shapes set, cache the frozen EfficientNet-Lite0's features, train Show and Tell (15
# epochs), print test BLEU-1..4 and the captions of three test images.
quickstart-captioning: $(STAMP)
	$(PY) -m captioning.captioner.quickstart
