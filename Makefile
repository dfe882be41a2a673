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
# LLVM at -O0: these tests compile hundreds of tiny programs and run each once or twice, so code generation's
# optimisation costs more than it saves (a third of the tier's time); XLA's own passes and the numerics are
# unchanged. The slow tier, which runs real computations, keeps the default.
test: install-test
	XLA_FLAGS="--xla_cpu_enable_fast_math=false --xla_backend_optimization_level=0" \
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadscope --max-worker-restart=0 -m "not slow" tests

# Slow tier: quality of the shipped assets, kill-and-resume runs, multi-device runs, the demo's golden results; a
# test module per worker, as the fast tier. Then, in a process of their own, the tests marked 'alone' (the full-width
# SD v1 peaks at 13 GiB: beside a worker that already held 7, it ran a 24 GiB host out of memory).
# In both tiers a worker that dies ends the run as a failure at once (--max-worker-restart=0): xdist 3.8 with
# --dist loadscope otherwise resends the dead worker's module to a new worker and then waits forever.
test-slow: install-test
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadscope --max-worker-restart=0 -m "slow and not alone" tests
	$(PY) -m pytest -q -m alone tests

bench:
	$(PIP) -e '.[bench]'
	$(PY) launch/bench.py sample
