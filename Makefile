# iommu-lab: the two commands are `make lab` and `make test` (see README.md).
# The interpreter .venv is made from: Debian's /usr/bin/python3 when it is 3.11+ with venv
# (its build runs the simulator ~20% faster than a default source build such as pyenv's:
# `python -m iommu_lab bench` prints which one ran), else python3. make PYTHON=... overrides.
PYTHON ?= $(shell for p in /usr/bin/python3 python3; do $$p -c 'import sys, ensurepip, venv; \
	sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && exit; done; echo python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Jupyter settings in the venv (lessons open as notebooks in Lab; see tools/jupyter_settings.py)
JUPYTER_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.d/iommu-lab.json
NB_BUILD := build/notebooks
PORT   ?= 8888
ROOT_OK = $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: lab app test notebooks bench clean native

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## make native: the engine's hot modules compiled with Cython into build/native (only those
## whose source changed; ~1 min the first time). A module runs compiled only while its .py is
## the text it was built from (iommu_lab/native.py). Without a C compiler the engine runs as
## Python, except under CI=true, where a failed build fails.
native: $(STAMP)
	@$(PY) -m iommu_lab native build $(if $(filter true,$(CI)),,--optional)

$(JUPYTER_SETTINGS): tools/jupyter_settings.py $(STAMP)
	$(PY) tools/jupyter_settings.py

## make lab: set up and open JupyterLab on notebooks/ (127.0.0.1, token auth on)
lab: $(STAMP) $(JUPYTER_SETTINGS) native
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=notebooks \
		--LabApp.default_url=/lab/tree/00-Index.md --LabApp.extension_manager=readonly \
		$(ROOT_OK)

## make app: every app (notebooks/app-*.ipynb: stepper, compare, replay) served by one Voila
## (127.0.0.1, token on; the URLs are printed). VOILA_POOL kernels per app wait preheated (the
## notebook already run), so a page is usable in seconds: set it to the number of people who
## open one app at once (each kernel holds ~150 MB)
VOILA_POOL ?= 1
APPS = $(notdir $(wildcard notebooks/app-*.ipynb))
app: $(STAMP) $(JUPYTER_SETTINGS) native
	@token=$$($(PY) -c 'import secrets; print(secrets.token_hex(16))'); \
	for a in $(APPS); do echo "  http://127.0.0.1:$(PORT)/voila/render/$$a?token=$$token"; done; \
	$(VENV)/bin/voila notebooks --Voila.ip=127.0.0.1 --port=$(PORT) \
		--pool_size=$(VOILA_POOL) --token=$$token --no-browser

## make notebooks: executable copies of every lesson and app in build/notebooks/ (answers
## mocked, tools/notebook_chrome.py build), each run top to bottom with nbmake
notebooks: $(STAMP) native
	$(PY) tools/notebook_chrome.py build $(NB_BUILD)
	$(VENV)/bin/pytest -q --nbmake --nbmake-timeout=120 $(NB_BUILD)

## make test: set up, then lint, unit + property tests (notebook structure and chrome
## included), stripped app notebooks, every notebook executed, browser
## (browser: JupyterLab + Voilà in Debian chromium, once, last; skipped without
##  /usr/bin/chromium unless CI=true; timings + screenshots in artifacts/)
test: $(STAMP) $(JUPYTER_SETTINGS) native
	$(VENV)/bin/ruff check iommu_lab tests tools
	$(VENV)/bin/pytest -q tests --ignore=tests/browser
	$(VENV)/bin/nbstripout --verify notebooks/*.ipynb
	$(MAKE) --no-print-directory notebooks
	$(VENV)/bin/pytest -q -rs tests/browser

bench: $(STAMP) native
	$(PY) -m iommu_lab bench

clean:
	rm -rf $(VENV) build artifacts .pytest_cache .ruff_cache
