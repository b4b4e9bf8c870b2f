# Two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve test lint bench clean browser stilts screenshots vendor

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dask]'
	touch $(STAMP)

install: $(STAMP)

# Builds a demo archive under state/ when no data root is configured, indexes it, serves it.
serve: $(STAMP)
	$(VENV)/bin/vo-service serve

# The browser tests drive Debian's Chromium (never `playwright install`): installed here when
# missing and running as root; in CI (CI=true) a missing browser fails those tests.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "Chromium is missing: apt-get install chromium (the browser tests need it)"

# STILTS (votlint, datalinklint, taplint) is the reference VO client of the protocol tests:
# Debian's package, installed the same way as Chromium.
stilts:
	@command -v stilts >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stilts; } || \
	  echo "STILTS is missing: apt-get install stilts (the protocol lint tests need it)"

test: $(STAMP) browser stilts
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -ra

# Screenshots of the web page for the README (docs/screenshots/), taken by the browser tests.
screenshots: $(STAMP) browser
	WEB_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/test_web_browser.py \
	  tests/test_web_handoff.py tests/test_timeseries_web.py

# The page's vendored browser libraries (committed; see vo_service/web/static/vendor/README.md),
# fetched again from the npm registry with npm pack.
SAMPJS_VERSION := 1.0.3
ALADIN_VERSION := 3.8.2
VENDOR := vo_service/web/static/vendor
vendor:
	tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent sampjs@$(SAMPJS_VERSION) \
	  aladin-lite@$(ALADIN_VERSION) && tar xzf sampjs-$(SAMPJS_VERSION).tgz && \
	  cp package/samp.js $(CURDIR)/$(VENDOR)/samp.js && rm -rf package && \
	  tar xzf aladin-lite-$(ALADIN_VERSION).tgz && \
	  cp package/dist/aladin.js package/COPYING package/COPYING.LESSER \
	    $(CURDIR)/$(VENDOR)/aladin-lite/ && rm -rf $$tmp

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) state .pytest_cache
