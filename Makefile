PY ?= python3
PIP = $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install install-test demo test test-slow bench

install:
	$(PIP) -e .

install-test:
	$(PIP) -e '.[test]'

demo: install
	$(PY) launch/demo.py --workdir=runs/demo

# Fast tier: parity, units and small end-to-end runs; one pytest worker per core (at most 4), a test module per worker.
test: install-test
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadscope -m "not slow" tests

# Slow tier: quality of the shipped assets, kill-and-resume runs, multi-device runs, the demo's golden results; a
# test module per worker, as the fast tier.
test-slow: install-test
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadscope -m slow tests

bench:
	$(PIP) -e '.[bench]'
	$(PY) launch/bench.py sample
