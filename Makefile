# Two entry points for a fresh machine with Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# Offline-friendly defaults for every Prefect process started from here.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY := false
# Processes cache the modules they compile (the project's own, and the compat venv's, installed
# without byte-compiling): with PYTHONDONTWRITEBYTECODE set, each would compile them anew.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test suite checks compat-smoke test-long test-compat lint typecheck browser \
	postgres clean

# The core suite against the oldest supported Prefect (constraints-compat.txt), in its own venv:
# everything but the reliability suite, the deployment end-to-end test and the browser check.
COMPAT_VENV := .venv-compat
COMPAT_WORKERS ?= 2
CORE_SUITE := tests --ignore=tests/reliability --ignore=tests/batch/test_deployment_e2e.py \
	--ignore=tests/workflows/test_ui_in_browser.py
COMPAT_SMOKE := tests/storage/test_ledger.py tests/api/test_models.py \
	tests/workflows/test_flow.py::test_local_files_in_mp4_out_with_local_staging \
	tests/workflows/test_flow.py::test_s3_staging_and_delivery_on_moto \
	tests/workflows/test_flow.py::test_the_summary_and_the_result_show_the_cost_in_dollars_and_a_reuse_costs_nothing \
	tests/cli/test_cli.py::test_generate_without_a_key_fails_with_one_line_that_names_the_fix

# constraints.txt pins the versions the suite was last run with, so every machine installs the same.
# --no-compile: pip would byte-compile all of the venv's 12,000 files, about 60 of the install's
# 90 CPU seconds; the 2,400 or so that the demo and the tests import are compiled on first
# import instead (about 10 CPU seconds), and cached (PYTHONDONTWRITEBYTECODE is unexported above).
$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit("Python 3.10+ is required") if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-compile -c constraints.txt \
		-e '.[dev]'
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	mkdir -p demo-output/.prefect
	PREFECT_HOME=$(CURDIR)/demo-output/.prefect $(BIN)/omnihuman demo --out demo-output

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

# The Prefect UI test drives a real headless Chromium (Debian's package): installed here when
# missing and this is a Debian machine run as root; elsewhere that one test skips, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "chromium is not installed: the browser test will skip (apt-get install -y chromium)"

# The deployment end-to-end test runs its Prefect server on a throwaway PostgreSQL cluster
# (tests/postgres.py): Debian's package, installed here when missing, as for chromium (after
# it: two apt-get cannot run at once).
postgres: browser
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } || \
	  echo "PostgreSQL is not installed: the deployment test will skip (apt-get install -y postgresql)"

# The two venvs install side by side (pip uses one core): the main one, and the packages of
# the oldest supported Prefect's (constraints-compat.txt pins all of them; that venv gets the
# project itself in `checks`, as two setuptools builds at once would share the source tree's
# egg-info). Once the main venv is ready the suite starts, on three pytest workers (its tests
# wait on servers and subprocesses much of the time: two workers kept 1.4 of the 2 cores busy,
# three keep 1.8, and the suite took 7.5 minutes instead of 9.5). Beside it, at low priority and
# one at a time: ruff, mypy and the smoke run of the core paths on the oldest Prefect (a video
# end to end, local and S3; the ledger; the API's models). `make test-compat` runs the whole
# core suite there. Their output is not held back (pytest's shows progress as it runs), so the
# checks' lines may fall between pytest's.
test:
	$(MAKE) --no-print-directory -j3 suite checks

suite: postgres $(INSTALLED)
	$(BIN)/pytest -q -n 3

checks: $(INSTALLED) $(COMPAT_VENV)/.packages
	nice -n 10 $(MAKE) --no-print-directory -j1 lint typecheck compat-smoke

compat-smoke: $(COMPAT_VENV)/.installed
	$(COMPAT_VENV)/bin/pytest -q -p no:cacheprovider -p no:xdist $(COMPAT_SMOKE)

# The reliability suite at full size (100-row soak, 16 kills): about 5 minutes on 2 cores;
# then the tests marked `long` elsewhere.
test-long: $(INSTALLED)
	$(BIN)/pytest -q tests/reliability --long
	$(BIN)/pytest -q -n 2 --long -m long tests --ignore=tests/reliability

# --no-compile: the smoke tests import about 2,400 of this venv's 12,000 files (compiled on first
# import, about 10 CPU seconds); pip would compile all of them, about 45.
$(COMPAT_VENV)/.packages: constraints-compat.txt
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	nice -n 10 $(COMPAT_VENV)/bin/python -m pip install -q --disable-pip-version-check \
		--no-compile -r constraints-compat.txt
	touch $@

$(COMPAT_VENV)/.installed: $(COMPAT_VENV)/.packages pyproject.toml
	$(COMPAT_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-compile \
		-c constraints-compat.txt -e '.[dev]'
	touch $@

test-compat: $(COMPAT_VENV)/.installed
	$(COMPAT_VENV)/bin/pytest -q -p no:cacheprovider -n $(COMPAT_WORKERS) $(CORE_SUITE)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
