# The two commands: `make run` and `make test`. Both set up everything they need from scratch.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test test-fast chaos soak bench peers lint check clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "listmod needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

## run: create the venv, install listmod and start the daemon (embedded defaults without listmod.toml)
run: $(STAMP)
	$(BIN)/listmod serve

## test: install what the tests need (the venv, and Dovecot for IMAP) and run the whole suite
test: $(STAMP)
	bash .ci/install-servers
	$(BIN)/python -m pytest -q

## test-fast: the suite without the long crash and load tests
test-fast: $(STAMP)
	bash .ci/install-servers
	$(BIN)/python -m pytest -q -m 'not slow'

## chaos: the long chaos run (20 kills across the phases, outages, a full disk); one summary per promise
##        with its seed (LISTMOD_CHAOS_SEED=N repeats a run); `make test` runs the short version
chaos: $(STAMP)
	bash .ci/install-servers
	@mkdir -p var
	LISTMOD_CHAOS=long LISTMOD_CHAOS_LOG=$(CURDIR)/var/chaos.log $(BIN)/python -m pytest -q -s tests/chaos

## bench: the benchmarks in benchmarks/ (not part of the tests)
bench: $(STAMP)
	$(BIN)/python benchmarks/intake.py
	$(BIN)/python benchmarks/rules.py
	bash .ci/install-servers
	$(BIN)/python benchmarks/moderation.py
	$(BIN)/python benchmarks/newsgroups.py

## peers: listmod against the zero-cost limit, a bare LMTP server, Mailman 3 core and mlmmj (~15 min)
peers: $(STAMP)
	@mkdir -p var
	$(BIN)/python benchmarks/peers.py --peers mailman3,mlmmj --out var/peers.json

## soak: 100,000 posts with 10,000 held; memory, decide() and digest time must stay flat (~20 min)
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py

## lint: ruff and mypy, as configured in pyproject.toml
lint: $(STAMP)
	$(BIN)/pip install --quiet ruff mypy
	$(BIN)/ruff check listmod tests benchmarks
	$(BIN)/mypy listmod

check: $(STAMP)
	$(BIN)/listmod check

clean:
	rm -rf $(VENV) var .pytest_cache
