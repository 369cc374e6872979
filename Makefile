# The two commands of the README: `make book` (build the site) and `make test` (run every test).
# Both create .venv on first use; later runs reuse it until requirements.lock or pyproject.toml change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NOTEBOOKS := $(wildcard chapters/*.ipynb)
JB_FLAGS  := -W -n --keep-going
# One pytest run for the helper tests and every notebook; --dist loadfile keeps each notebook's
# cells on one worker (plain -n 2 would spread them across kernels and break).
PYTEST_FLAGS := -n 2 --dist loadfile --nbval --nbval-current-env \
                --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: book test test-helpers test-notebooks build lab execute lint clean

book: build
	@echo "The site is built: open file://$(CURDIR)/_build/html/index.html"

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_FLAGS) tests $(NOTEBOOKS)
	$(MAKE) --no-print-directory build

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.lock
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

build: $(STAMP)
	$(BIN)/jupyter-book build . $(JB_FLAGS)

# Re-execute notebooks and store their outputs, after editing them: `make execute` for all,
# `make execute NB=chapters/batch_norm.ipynb` for one.
NB ?= $(NOTEBOOKS)
execute: $(STAMP)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=600 --ExecutePreprocessor.kernel_name=python3 $(NB)

lab: $(STAMP)
	$(BIN)/jupyter lab chapters/

lint: $(STAMP)
	$(BIN)/ruff check helpers tests chapters

clean:
	rm -rf _build
