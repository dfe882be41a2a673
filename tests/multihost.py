"""Run a command as N `jax.distributed` processes on localhost CPU (one host device each unless told)."""
import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def env(num_processes: int, devices_per_process: int = 1) -> dict:
    """The environment every process shares: coordinator on a free port, CPU devices."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": f"localhost:{free_port()}",
            "JAX_NUM_PROCESSES": str(num_processes),
            "XLA_FLAGS": _xla_flags(devices_per_process)}


def _xla_flags(devices: int) -> str:
    """The tests' XLA flags (conftest: no fast math) with `devices` host devices."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])


def run_processes(argv: list[str], num_processes: int = 2, devices_per_process: int = 1,
                  timeout: int = 1200) -> list[str]:
    """Start `argv` as processes 0..N-1 from the repository root; assert each exits 0; their stdouts."""
    shared = env(num_processes, devices_per_process)
    procs = [subprocess.Popen(argv, cwd=ROOT, text=True, env={**shared, "JAX_PROCESS_ID": str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(num_processes)]
    done = [p.communicate(timeout=timeout) for p in procs]
    failed = [f"process {i} (exit {p.returncode}):\n{err[-3000:]}"
              for i, (p, (_, err)) in enumerate(zip(procs, done)) if p.returncode != 0]
    assert not failed, "\n".join(failed)  # every failing process: the first to fail is often not process 0
    return [out for out, _ in done]


def run_one(argv: list[str], devices: int) -> str:
    """`argv` as one process with `devices` host devices (the reference run); its stdout."""
    shared = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": _xla_flags(devices)}
    run = subprocess.run(argv, cwd=ROOT, text=True, capture_output=True, env=shared)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout
