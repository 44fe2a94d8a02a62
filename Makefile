# wirekit: `make serve` runs the main job, `make test` is what CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_PACKAGES := openssl gcc chromium nft curl redis-server
# Debian packages only benchmarks use (load generators): wrk (bench-rest).
BENCH_APT_PACKAGES := wrk

.PHONY: serve test lint bench bench-echo bench-hub bench-ws bench-load bench-rest bench-cluster \
	system-deps bench-deps install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# setup.py compiles the load generator's hot path with mypyc (its HOT_PATH list, read here):
# edits to those files must rebuild.
HOT_PATH := $(shell sed -n 's/^HOT_PATH = \[\(.*\)\]/\1/p' setup.py | tr -d '",')

$(STAMP): pyproject.toml setup.py $(HOT_PATH) | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests and benchmarks call, installed only when missing: openssl
# (s_client, the TLS oracle), chromium (renders the load report under Playwright), nft (package
# nftables: drops packets for the UDP loss test), gcc (builds the benchmarks' C load clients and
# the load generator's mypyc-compiled hot path, setup.py), curl (the HTTP oracle of the TLS and
# `wirekit http` tests), redis-server (the multi-node engine's tests start their own).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  pkgs=$$(echo $$missing | sed 's/\bnft\b/nftables/'); \
	  echo "installing: $$pkgs"; apt-get update -qq && apt-get install -y -qq $$pkgs; fi

bench-deps:
	@missing=""; for p in $(BENCH_APT_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && apt-get install -y -qq $$missing; fi

serve: $(STAMP)
	$(BIN)/wirekit serve

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy --strict src

test: system-deps $(STAMP) lint
	$(BIN)/python -m pytest -q

bench: bench-echo bench-hub bench-ws bench-load bench-rest bench-cluster

bench-echo: system-deps $(STAMP)
	$(BIN)/python benchmarks/echo.py

bench-hub: system-deps $(STAMP)
	$(BIN)/python benchmarks/hub_tcp.py

# The reference hubs need picows and websockets: the project's `bench` extra.
bench-ws: system-deps $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/hub_ws.py

bench-load: system-deps $(STAMP)
	$(BIN)/python benchmarks/load.py

# Fan-out through 1 node (embedded), 1 node (Redis) and 2 nodes (Redis); starts its own redis-server.
bench-cluster: system-deps $(STAMP)
	$(BIN)/python benchmarks/hub_cluster.py

# wirekit's REST API (full middleware chain) against a bare aiohttp app, under wrk.
bench-rest: system-deps bench-deps $(STAMP)
	$(BIN)/python benchmarks/rest.py

clean:
	rm -rf $(VENV) build benchmarks/build .pytest_cache .mypy_cache .ruff_cache .hypothesis
