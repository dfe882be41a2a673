"""Shared test set-up: fp32 everywhere, deterministic CPU XLA, and the PyTorch reference builders importable."""
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
sys.path.insert(0, str(Path(__file__).parent))  # tiny_sd.py: the diffusers PyTorch reference pipeline

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def torch_threads():
    """PyTorch references on 1 thread: they run tiny tensors one op after another, and on 2 cores a second intra-op
    thread only adds synchronisation (a 10-step tiny pipeline: ~0.3 s on 1 thread, 3-10 s on 2 with other work on
    the machine). A module that needs the default count overrides this fixture."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
