.PHONY: help install demo test lint types lock lock-check ci bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install:  ## create .venv and install skuforge[dev] from the lock
	./scripts/bootstrap.sh

demo:  ## run the pipeline on the example capture into out/demo
	./scripts/demo.sh

test:  ## run the test suite
	./scripts/test.sh

lock:  ## regenerate requirements/lock.txt after changing pyproject's dependencies
	./scripts/lock.sh

lock-check:  ## fail if requirements/lock.txt is older than pyproject's dependencies
	./scripts/lock.sh --check

lint:  ## ruff lint and format check
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

types:  ## mypy on the packages
	.venv/bin/mypy

ci:  ## everything CI runs
	.ci/run

bench:  ## cutout quality and pipeline speed tables
	.venv/bin/python -m benchmarks.cutout_quality
	.venv/bin/python -m benchmarks.pipeline_speed

clean:  ## remove outputs and the local store
	rm -rf out .skuforge
