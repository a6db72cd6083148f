# Two commands on a fresh machine with Python 3.11+ and make: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the gateway with the demo bot on http://localhost:8080 (embedded Redis when REDIS_URL is unset)
run: $(STAMP)
	DEMO_TWILIO=$${DEMO_TWILIO:-1} $(BIN)/handoff-gateway run

## test: the whole suite (a throwaway Redis on a free port when REDIS_URL is unset)
test: $(STAMP)
	$(BIN)/python -m pytest

## lint: ruff and mypy --strict
lint: $(STAMP)
	$(BIN)/ruff check gateway channels sessions handoff tests
	$(BIN)/mypy gateway channels sessions handoff

check: lint test

## bench: web chat, handoff policy, desk claim, callbacks, SMS webhook, voice turn, /metrics and review benchmarks (tests/bench/README.md)
bench: $(STAMP)
	$(BIN)/python tests/bench/bench_webchat.py --sessions 200
	$(BIN)/python tests/bench/bench_policy.py
	$(BIN)/python tests/bench/bench_desk.py
	$(BIN)/python tests/bench/bench_callbacks.py
	$(BIN)/python tests/bench/bench_sms.py
	$(BIN)/python tests/bench/bench_voice.py
	$(BIN)/python tests/bench/bench_metrics.py
	$(BIN)/python tests/bench/bench_review.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
