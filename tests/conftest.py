"""Shared test set-up: fp32 everywhere, deterministic CPU XLA."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
