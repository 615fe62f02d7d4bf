# Two commands matter: `make demo` and `make test`. Each sets up its own virtual environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test system-deps lint typecheck compile bench clean mutate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The PyTorch extra (torch CPU build, scikit-learn) only for the test suite: make demo stays light.
TORCH_STAMP := $(VENV)/.installed-torch
$(TORCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,torch,opacus]'
	touch $(TORCH_STAMP)

# Byte-compile explicitly: an editable install writes no .pyc, and with PYTHONDONTWRITEBYTECODE
# set (as on CI machines) every CLI call would recompile shoal from source (~15 ms of cold start).
compile: $(STAMP)
	$(BIN)/python -m compileall -q src >/dev/null

demo: compile
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples scripts
	$(BIN)/ruff format --check src tests bench examples scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite runs in a random order (pytest-randomly), its seed printed first, so that no test can
# depend on another having run before it; `make test SEED=N` runs one order again. The 25
# slowest tests are listed at the end: the suite has a 15-minute budget.
# iproute2 (network namespaces), PostgreSQL and zsh from Debian's packages, when missing.
system-deps:
	bash scripts/system-deps.sh

test: system-deps lint typecheck compile $(TORCH_STAMP)
	@seed=$(SEED); seed=$${seed:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "test order: pytest-randomly seed $$seed (make test SEED=$$seed runs it again)"; \
	$(BIN)/python -m pytest -q -p randomly --randomly-seed=$$seed --durations=25

# Mutation testing of fl/'s numeric core with mutmut (docs/mutation.md): many minutes on 2
# cores, so not part of `make test` or CI's run. Survivors are listed at the end.
MUTATE_STAMP := $(VENV)/.installed-mutate
$(MUTATE_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,mutate]'
	touch $(MUTATE_STAMP)

mutate: compile $(MUTATE_STAMP)
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

bench: compile
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache mutants
