# convscope: `make demo` and `make test` work from a clean clone (offline but for the package registries).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The venv is rebuilt only when requirements.txt changes (its hash names the stamp file).
REQ_HASH := $(shell (sha1sum requirements.txt 2>/dev/null || shasum requirements.txt) | cut -c1-12)
STAMP  := $(VENV)/.installed-$(REQ_HASH)
LOGDIR ?= lightning_logs
PORT   ?= 6006
RUN    ?=

.PHONY: demo test venv tensorboard pictures benchmark accuracy clean

EDITABLE := $(VENV)/.convscope-editable

venv: $(STAMP) $(EDITABLE)

$(STAMP): requirements.txt
	@rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -r requirements.txt
	@touch $@

# convscope itself, editable, so TensorBoard finds its plugin (the `tensorboard_plugins` entry point in pyproject)
# and `make tensorboard` shows the "convscope units" tab; redone when pyproject.toml changes.
$(EDITABLE): pyproject.toml $(STAMP)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

demo: venv
	$(PY) -m lit_modules.demo

test: venv    # lint and format check first (a finding fails), then the tests
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -rs --durations=15 tests

pictures: venv    # the manual's docs/images/ from the newest run (make demo first), TensorBoard screenshots, extra runs
	$(PY) benchmarks/export_images.py $(RUN) --screenshot --extra

tensorboard: venv
	$(VENV)/bin/tensorboard --logdir $(LOGDIR) --host 127.0.0.1 --port $(PORT) --samples_per_plugin images=200

benchmark: venv
	$(PY) benchmarks/epoch_time.py

accuracy: venv
	$(PY) benchmarks/accuracy.py --dataset fashion_mnist

clean:
	rm -rf $(VENV) .pytest_cache
