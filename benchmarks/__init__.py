"""Benchmarks, each side by side with its reference in one run; each writes its own section of a markdown file
(BENCHMARKS.md by default) and returns it. launch/bench.py runs them by name (`harness.run`).

  sample     jaxprobe vs diffusers PyTorch, same tiny SD and SDXL-structured pipelines, CPU
  intervene  the probe-guided edit in one jit vs the paper's eager PyTorch hook loop, toy LDM, same edits
  probe      every layer x step probe, vmapped JAX vs the paper's one-at-a-time PyTorch loop
  capture    sampling vs sampling + capture (+ baselines, + streaming ridge), toy LDM
  train      toy LDM training step on 1 CPU device vs one device per core (data parallel)
  scaling    capture and probe-fit throughput on 1, 2, 4, 8 XLA host devices
  concepts   one checkpoint of the toy concept sweep: grouped vmapped fits vs one-at-a-time PyTorch
  dpt        the label stage's depth model: Flax DPT-Large under jit vs transformers PyTorch, same random weights

The PyTorch paper references live in `references` (parity tests import them too); torch, diffusers and
transformers (the `bench` extra) are imported inside the functions that use them. This package sits beside configs/
and launch/, outside the installed library.
"""
