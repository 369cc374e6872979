# The two commands of the README: `make book` (build the site) and `make test` (run every test).
# Both create .venv on first use; later runs reuse it until requirements.lock or pyproject.toml change.
# The site's math renderer (MathJax 3, from npm, pinned in package-lock.json) is installed into
# node_modules/ and staged in .mathjax/ (both ignored); the build copies it into the site so that
# _build/html works with no network.

PYTHON ?= python3
NPM    ?= npm
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NOTEBOOKS := $(wildcard chapters/*.ipynb)
JB_FLAGS  := -W -n --keep-going
# One pytest run for the helper tests and every notebook; --dist loadfile keeps each notebook's
# cells on one worker (plain -n 2 would spread them across kernels and break).
# The browser test needs the built site, so it runs after the build, on its own.
BROWSER_TEST := tests/test_site_browser.py
PYTEST_FLAGS := -n 2 --dist loadfile --nbval --nbval-current-env \
                --nbval-sanitize-with tests/nbval_sanitize.cfg
# The second nbval pass runs PyTorch's portable (non-SIMD) CPU kernels, whose float rounding differs
# most from the AVX2/AVX-512 kernels a machine picks by itself: a stored output that survives both
# passes survives another reader's CPU.
PORTABLE_KERNELS := ATEN_CPU_CAPABILITY=default
# MathJax staged where _config.yml's html_extra_path finds it: .mathjax/_static/mathjax/ lands in
# _build/html/_static/mathjax/ (mathjax_path in _config.yml points there).
MATHJAX_SRC := node_modules/mathjax/es5
MATHJAX     := .mathjax/_static/mathjax/tex-mml-chtml.js

.PHONY: book test test-browser build lab execute lint clean workshop workshop-check mathjax handout \
        prerequisites bench

book: prerequisites build
	@echo "The site is built: open file://$(CURDIR)/_build/html/index.html"

test: prerequisites $(STAMP)
	$(BIN)/ruff check helpers tests tools chapters bench
	$(BIN)/pytest $(PYTEST_FLAGS) --ignore=$(BROWSER_TEST) tests $(NOTEBOOKS)
	@# The site build (Sphinx, one core) runs beside the second nbval pass; its log follows it.
	@echo "nbval again with $(PORTABLE_KERNELS), and the site build beside it"
	@log=$$(mktemp); $(MAKE) --no-print-directory build > $$log 2>&1 & build=$$!; \
	 $(PORTABLE_KERNELS) $(BIN)/pytest $(PYTEST_FLAGS) $(NOTEBOOKS); nbval=$$?; \
	 wait $$build; built=$$?; echo "--- site build ---"; cat $$log; rm -f $$log; \
	 [ $$nbval -eq 0 ] && [ $$built -eq 0 ]
	$(MAKE) --no-print-directory test-browser

# Opens every page of _build/html in headless Chromium (network limited to localhost), pages split
# over two workers with a browser each; skips,
# saying so in the summary, when Chromium is not installed (`apt-get install -y chromium`).
test-browser: $(STAMP)
	rm -rf _build/screenshots
	$(BIN)/pytest -rs -n 2 --dist load $(BROWSER_TEST)

# What the two commands need that they cannot install themselves, checked first with a clear message.
prerequisites:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	    echo "make: the book needs Python 3.11 or newer as '$(PYTHON)' (set PYTHON=/path/to/python3.11)"; exit 1; }
	@command -v $(NPM) >/dev/null || { \
	    echo "make: the book needs Node.js and npm (for MathJax), e.g. apt-get install -y nodejs npm"; exit 1; }

# Needs a CUDA GPU and a CUDA build of torch (about 2-3 minutes on an H100/H200): writes
# bench/results/<gpu>.csv and .json, which chapters/fast_norms.ipynb plots.
bench: $(STAMP)
	$(BIN)/python bench/norms.py --out bench/results

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.lock
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

mathjax: $(MATHJAX)

$(MATHJAX): package.json package-lock.json
	$(NPM) ci --no-audit --no-fund --ignore-scripts --loglevel=error
	rm -rf .mathjax && mkdir -p .mathjax/_static/mathjax
	cp -R $(MATHJAX_SRC)/tex-mml-chtml.js $(MATHJAX_SRC)/input $(MATHJAX_SRC)/output \
	      $(MATHJAX_SRC)/ui $(MATHJAX_SRC)/a11y $(MATHJAX_SRC)/sre node_modules/mathjax/LICENSE \
	      .mathjax/_static/mathjax/
	touch $(MATHJAX)

build: $(STAMP) $(MATHJAX)
	$(BIN)/jupyter-book build . $(JB_FLAGS)

# Participant notebooks: a copy of every chapter in workshop/ with the worked solutions replaced
# by an empty cell, MyST made plain Markdown (glued numbers written in) and all outputs cleared.
# A copy a participant edited is kept, never overwritten (delete it to get a fresh one).
workshop: $(STAMP)
	$(BIN)/python tools/make_workshop.py --out workshop $(NOTEBOOKS)

# Before a workshop: execute every participant copy up to its first exercise (a few minutes).
workshop-check: workshop
	for nb in workshop/*.ipynb; do $(BIN)/python tools/make_workshop.py --run-until-exercise $$nb || exit 1; done

# What to hand to workshop participants: the offline site and the participant notebooks, zipped.
handout: build workshop
	rm -f _build/normalization-executed-site.zip _build/normalization-executed-notebooks.zip
	$(BIN)/python -m zipfile -c _build/normalization-executed-site.zip _build/html
	$(BIN)/python -m zipfile -c _build/normalization-executed-notebooks.zip workshop
	@echo "Hand out _build/normalization-executed-site.zip and _build/normalization-executed-notebooks.zip"

# Re-execute notebooks and store their outputs, after editing them: `make execute` for all,
# `make execute NB=chapters/batch_norm.ipynb` for one.
NB ?= $(NOTEBOOKS)
execute: $(STAMP)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=600 --ExecutePreprocessor.kernel_name=python3 $(NB)

lab: $(STAMP)
	$(BIN)/jupyter lab chapters/

lint: $(STAMP)
	$(BIN)/ruff check helpers tests chapters tools

# Removes the built site only: workshop/ may hold participants' edited notebooks.
clean:
	rm -rf _build
