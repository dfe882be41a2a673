"""Shared test set-up: fp32 everywhere, deterministic CPU XLA, and the PyTorch reference builders importable."""
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
sys.path.insert(0, str(Path(__file__).parent))  # tiny_sd.py: the diffusers PyTorch reference pipeline

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
