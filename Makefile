# Two commands on a fresh clone (with ../shared beside it): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Research datasets are read from the shared folder beside the project, never downloaded.
SHARED_DATA := $(abspath ../shared/data)
SHARED_WHEELS := $(abspath ../shared/wheels)
export USERLENS_DATA_MIRROR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: demo serve test lint bench docs clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# the CPU build of torch, pinned here (an unpinned torch pulls the multi-GB CUDA build)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	# llama-cpp-python from the prebuilt wheel in ../shared/wheels when it is there
	# (else pip compiles it, about 5 minutes)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		$(if $(wildcard $(SHARED_WHEELS)),--find-links $(SHARED_WHEELS),) \
		-e ".[dev,torch,serve,ann,plot,llm,tune,text]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/userlens run configs/ml-1m-baselines.toml --plot runs/ml-1m-baselines/leaderboard.png
	@echo ""
	@echo "Next: compare two models with a paired test:"
	@echo "  $(BIN)/userlens compare runs/ml-1m-baselines/als runs/ml-1m-baselines/ease"
	@echo "Describe a dataset:    $(BIN)/userlens describe ml-1m"
	@echo "Your own CSV: copy configs/ml-100k-baselines.toml, set [data] path/format/columns."

# Serve the demo's EASE model with every ML-1M event loaded (run `make demo` first or not).
serve: $(BIN)/.installed
	test -f runs/ml-1m-baselines/ease/model/model.json || $(BIN)/userlens run configs/ml-1m-baselines.toml
	# events live in $$USERLENS_HOME/events.db (never in runs/); importing twice adds nothing
	$(BIN)/userlens import-events configs/ml-1m-baselines.toml
	$(BIN)/userlens serve runs/ml-1m-baselines/ease

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not gpu"

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks

docs: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[docs]"
	$(BIN)/mkdocs build --strict --site-dir build/site

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/ml1m_baselines.py

clean:
	rm -rf $(VENV) runs .pytest_cache
