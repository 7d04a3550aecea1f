# Everything a fresh machine needs, from nothing but Python 3.11 and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo test bench bench-quick profile clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/tour.py

test: $(STAMP)
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(PY) -m pytest -q tests properties

# Benchmarks against the peers (PostgreSQL and redis-server come from apt where missing; a peer
# whose server cannot be had is skipped with a message).
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[bench]'
	-command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || (apt-get update -qq && apt-get install -y -qq postgresql redis-server)
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) benchmarks/run.py

bench-quick: $(BENCH_STAMP)
	$(PY) benchmarks/run.py --quick

profile: $(BENCH_STAMP)
	$(PY) benchmarks/profile_actorq.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
