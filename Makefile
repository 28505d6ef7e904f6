# Plum: `make run` sets everything up and starts the all-in-one server with the dashboard;
# `make test` sets everything up (Debian packages included) and runs the whole suite.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := .make
ADDR   ?= 127.0.0.1:8080

# Debian packages the tests drive for real: Chromium for the dashboard, CJK fonts for
# readable zh screenshots, busybox-static and docker.io for container tests.
DEB_PACKAGES := chromium fonts-noto-cjk busybox-static docker.io

WEBUI_SOURCES := $(shell find webui/src webui/public -type f 2>/dev/null) \
	webui/index.html webui/vite.config.ts webui/tsconfig.json webui/tsconfig.app.json \
	webui/tsconfig.node.json

.PHONY: run test setup venv webui deb lint test-python test-webui bench clean help

help:
	@echo "make run    set up and start Plum all-in-one on http://$(ADDR)/"
	@echo "make test   set up (Debian packages too) and run the whole suite"
	@echo "make bench  run the benchmarks in bench/"

run: setup
	$(BIN)/plum serve --addr $(ADDR)

setup: venv webui

venv: $(STAMP)/venv
$(STAMP)/venv: pyproject.toml
	@mkdir -p $(STAMP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

webui: plum/web/dist/index.html
webui/node_modules/.package-lock.json: webui/package.json webui/package-lock.json
	cd webui && npm ci --no-audit --no-fund
	@touch $@
plum/web/dist/index.html: webui/node_modules/.package-lock.json $(WEBUI_SOURCES)
	cd webui && npm run build

deb: $(STAMP)/deb
$(STAMP)/deb: Makefile
	@mkdir -p $(STAMP)
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

lint: venv
	$(BIN)/ruff check plum tests bench examples

test-webui: webui
	cd webui && npm test

test-python: setup deb
	$(BIN)/python -m pytest

test: setup deb lint test-webui test-python

bench: setup
	$(BIN)/python bench/store.py

clean:
	rm -rf $(STAMP) plum/web/dist webui/node_modules
