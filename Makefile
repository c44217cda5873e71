# Two entry points for a fresh machine (Python >= 3.11, pip, a C compiler): `make run`, `make test`.
# Both create .venv and install the package into it once; later calls reuse it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-slow bench figures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# the main job: the default (alpha, omega) phase diagram, theory and a simulation check (about 1 min)
run: $(STAMP)
	$(BIN)/cfgphase phase-diagram --config data/phase_diagram.toml --out data/phase_diagram.h5 --overwrite
	$(BIN)/cfgphase plot data/phase_diagram.h5 --kind phase-diagram --out data/phase_diagram.png

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# every notebook in full mode: figures/NN_*.pdf and .png (and the data behind them, .h5)
figures: $(STAMP)
	@for nb in notebooks/0*.py; do echo "$$nb"; CFGPHASE_FIGURES=figures $(BIN)/python $$nb || exit 1; done

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_score

clean:
	rm -rf $(VENV) build *.egg-info
