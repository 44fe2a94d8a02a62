# wirekit: `make serve` runs the main job, `make test` is what CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT_PACKAGES := openssl gcc chromium

.PHONY: serve test lint bench system-deps install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests and benchmarks call (openssl s_client as a TLS oracle; chromium
# renders the load report under Playwright; gcc builds
# the benchmark's C load generator). Installed only when missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
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

bench: system-deps $(STAMP)
	$(BIN)/python benchmarks/echo.py

clean:
	rm -rf $(VENV) build benchmarks/build .pytest_cache .mypy_cache .ruff_cache .hypothesis
