"""Shared test set-up: fp32 everywhere, deterministic CPU XLA, and the PyTorch reference builders importable.
torch is not imported here: a pure-JAX test module runs without it (and without its seconds of import)."""
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
sys.path.insert(0, str(Path(__file__).parent))  # tiny_sd.py: the diffusers PyTorch reference pipeline

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402


def pytest_configure(config):
    """One XLA compile cache per test run, shared by its xdist workers (they inherit the variable): many tests
    compile the same tiny UNet, VAE and sampler, and compiling dominates the fast tier. In-process only (launchers
    the tests spawn compile as a user's run would); it starts empty and goes at the end of the run, so no result
    depends on an earlier run."""
    if not hasattr(config, "workerinput"):  # the xdist controller, or a plain run
        os.environ["JAXPROBE_TESTS_XLA_CACHE"] = tempfile.mkdtemp(prefix="jaxprobe-tests-xla-")
    jax.config.update("jax_compilation_cache_dir", os.environ["JAXPROBE_TESTS_XLA_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ.pop("JAXPROBE_TESTS_XLA_CACHE"), ignore_errors=True)


@pytest.fixture(autouse=True)
def torch_threads():
    """PyTorch references on 1 thread: they run tiny tensors one op after another, and on 2 cores a second intra-op
    thread only adds synchronisation (a 10-step tiny pipeline: ~0.3 s on 1 thread, 3-10 s on 2 with other work on
    the machine). A module that needs the default count overrides this fixture. Only where torch is already
    imported (by the test modules that use it, at collection): this fixture never imports it."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
