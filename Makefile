# The two commands of the README: `make demo` runs the service with demo data, `make test` runs the
# tests. Both install what is missing first (Debian packages and the virtualenv).
.PHONY: setup setup-test demo test lint bench

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

demo: setup
	.venv/bin/backupplus serve --demo $(ARGS)

test: setup-test
	.venv/bin/python -m pytest -q $(ARGS)

lint: setup-test
	.venv/bin/ruff check backupplus infra broker quotas media api loadtests tests benchmarks ops
	.venv/bin/mypy
	.venv/bin/lint-imports

bench: setup-test
	.venv/bin/python benchmarks/admission.py
