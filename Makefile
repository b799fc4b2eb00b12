# Two commands do everything: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
DEMO_CUSTOMERS ?= 5000
HOST ?= 127.0.0.1
PORT ?= 8000
export FLASK_APP := wsgi

.PHONY: run test venv services db demo serve lint worker beat flower bench soak clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

## make run: the embedded default (SQLite under instance/, no Redis needed)
run: demo serve

db: venv
	$(BIN)/flask db upgrade

# Two runs (30 days ago, then today), so history and movement have data.
demo: db
	$(BIN)/flask seed-demo --customers $(DEMO_CUSTOMERS) --seed 42 --if-empty
	$(BIN)/flask calculate-rfm --as-of $$($(BIN)/python -c 'import datetime as d; print(d.datetime.now(d.UTC).date() - d.timedelta(days=30))')
	$(BIN)/flask calculate-rfm --verbose

serve: venv
	@echo "Serving on http://$(HOST):$(PORT)/ (Ctrl-C stops)"
	$(BIN)/gunicorn --bind $(HOST):$(PORT) --workers 1 --threads 8 --no-control-socket --preload wsgi:app

## make test: the whole suite against real PostgreSQL and Redis
test: venv services
	$(BIN)/ruff check .
	$(BIN)/pytest

services:
	bash scripts/ensure-services.sh

lint: venv
	$(BIN)/ruff check .

## The full stack by hand (set DATABASE_URL and REDIS_URL, RFM_PROFILE=production)
worker: venv
	$(BIN)/celery -A worker worker --loglevel INFO --concurrency 1

beat: venv
	$(BIN)/celery -A worker beat --loglevel INFO --schedule instance/celerybeat-schedule

# Flower reads FLOWER_BASIC_AUTH itself (kept out of `ps`); the app refuses to start it without.
flower: venv
	@test -n "$$FLOWER_BASIC_AUTH" || { echo "set FLOWER_BASIC_AUTH=user:password"; exit 1; }
	$(BIN)/celery -A worker flower --address=127.0.0.1 --port=5555

## make bench: recalculation, import and HTTP benchmarks at 10k/100k/1M customers -> BENCHMARKS.md
# Compiled first, as a deployment is: a process start otherwise recompiles
# every module it imports where PYTHONDONTWRITEBYTECODE is set (0.04 s a run).
bench: venv services
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-bench.txt
	$(BIN)/python -m compileall -q rfm_service migrations bench wsgi.py worker.py
	$(BIN)/python -m bench.run $(BENCH_ARGS)

SOAK_SECONDS ?= 120
## make soak: the production-like stack under read load, recalculating every 10 s
soak: venv services
	$(BIN)/python -m soak.run --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .hypothesis
