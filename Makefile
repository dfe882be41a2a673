PY ?= python3
PIP = $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install install-test demo test bench

install:
	$(PIP) -e .

install-test:
	$(PIP) -e '.[test]'

demo: install
	$(PY) launch/demo.py --workdir=runs/demo

test: install-test
	$(PY) -m pytest -q tests

bench:
	$(PIP) -e '.[bench]'
	$(PY) launch/bench.py sample
