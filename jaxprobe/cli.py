"""What every launcher in launch/ does alike: quiet logs, one line for a bad input, and a Ctrl-C that stops at once.

Every jaxprobe write is atomic (`jaxprobe.io`) and every long job resumes, so an interrupt needs no clean-up and
the process can end on the spot. It has to: Python runs its signal handlers (and raises KeyboardInterrupt) only
between bytecodes of the main thread, which an XLA compilation holds for tens of seconds, and unwinding into
interpreter shutdown with XLA's threads still running can end in a segmentation fault.
"""
from __future__ import annotations

import functools
import os
import signal
import sys
import threading

import jax
from absl import app, flags, logging

from jaxprobe import mesh

INTERRUPTED = "interrupted; rerun the same command to resume"
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "start jax.distributed first (multi-host: run the same command on every host; the "
    "workdir must be on a filesystem they all see)")


def run(main) -> None:
    """`absl.app.run(main)` as a jaxprobe launcher: absl and orbax INFO logs off (orbax logs every checkpoint);
    a ValueError or FileNotFoundError, which is how the library's up-front checks reject a bad input, printed as
    one line `error: <message>` on stderr with exit status 2 and no traceback (JAXPROBE_DEBUG=1 keeps the
    traceback, for an error raised deep inside a job rather than by a check); Ctrl-C as `exit_on_interrupt`;
    `--distributed` starts JAX's multi-host runtime before `main`."""
    app.run(functools.partial(_main, main))


def _main(main, argv):
    logging.set_verbosity(logging.WARNING)
    exit_on_interrupt()
    try:
        mesh.initialize(_DISTRIBUTED.value)
        return main(argv)
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("JAXPROBE_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def on_mesh(c):
    """The context a launcher runs its job in: the device mesh of `c.mesh` (`jaxprobe.mesh`), checked first."""
    return jax.set_mesh(mesh.from_config(c))


def exit_on_interrupt() -> None:
    """From now on SIGINT flushes stdout and stderr, prints INTERRUPTED and ends the process with status 130 (a
    shell's code for Ctrl-C), even in the middle of an XLA compilation. Call from the main thread.

    Python's C-level handler writes the signal's number to the wakeup fd the moment it arrives; a thread blocked
    on that fd acts on it, since XLA releases the GIL while it compiles and runs. The Python-level handler does
    nothing, so no KeyboardInterrupt unwinds the main thread meanwhile.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block
    signal.set_wakeup_fd(write_fd)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    threading.Thread(target=_exit_on_sigint, args=(read_fd,), name="exit-on-interrupt", daemon=True).start()


def _exit_on_sigint(read_fd: int) -> None:
    while os.read(read_fd, 1) != bytes([signal.SIGINT]):  # other signals with Python handlers also write here
        pass
    try:
        sys.stdout.flush()
        sys.stderr.write(f"\n{INTERRUPTED}\n")
        sys.stderr.flush()
    finally:
        os._exit(130)
