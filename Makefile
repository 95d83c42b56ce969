# iommu-lab: the two commands are `make lab` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8888
ROOT_OK = $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: lab app test lint unit notebooks browser bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## make lab: set up and open JupyterLab on notebooks/ (127.0.0.1, token auth on)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=notebooks \
		--LabApp.default_url=/lab/tree/00-Index.ipynb --LabApp.extension_manager=readonly \
		$(ROOT_OK)

## make app: the stepper as a Voila app (127.0.0.1, token on)
app: $(STAMP)
	$(VENV)/bin/voila notebooks/app-stepper.ipynb --Voila.ip=127.0.0.1 --port=$(PORT) \
		--token=$$($(PY) -c 'import secrets; print(secrets.token_hex(16))') --no-browser

## make test: set up, then lint, unit + property tests, notebooks, stripped outputs, browser
## (browser: JupyterLab + Voilà in Debian chromium, once, last; skipped without
##  /usr/bin/chromium unless CI=true; timings + screenshots in artifacts/)
test: $(STAMP)
	$(VENV)/bin/ruff check iommu_lab tests
	$(VENV)/bin/pytest -q tests --ignore=tests/browser
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		$(VENV)/bin/nbstripout --verify notebooks/*.ipynb && \
		$(VENV)/bin/pytest -q --nbmake --nbmake-timeout=120 notebooks; \
	fi
	$(VENV)/bin/pytest -q -rs tests/browser

bench: $(STAMP)
	$(PY) -m iommu_lab bench

clean:
	rm -rf $(VENV) artifacts .pytest_cache .ruff_cache
