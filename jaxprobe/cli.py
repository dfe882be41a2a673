"""What every launcher in launch/ does alike: quiet logs, one line for a bad input (a mistyped --config path or
override key included), and a Ctrl-C that stops at once.

Every jaxprobe write is atomic (`jaxprobe.io`) and every long job resumes, so an interrupt needs no clean-up and
the process can end on the spot. It has to: Python runs its signal handlers (and raises KeyboardInterrupt) only
between bytecodes of the main thread, which an XLA compilation holds for tens of seconds, and unwinding into
interpreter shutdown with XLA's threads still running can end in a segmentation fault.
"""
from __future__ import annotations

import difflib
import functools
import os
import re
import signal
import sys
import threading
from pathlib import Path

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from jaxprobe import config_file, mesh

INTERRUPTED = "interrupted; rerun the same command to resume"
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "start jax.distributed first (multi-host: run the same command on every host; the "
    "workdir must be on a filesystem they all see)")
_CONFIG_ARG = re.compile(r"^--?config(=|$)")
_OVERRIDE_ARG = re.compile(r"^--?(?:no)?config\.([^=]*)")
_default_config: list[str] = []  # config_flag's default, applied by parse_flags


def config_flag(default: str | None, help: str) -> flags.FlagHolder:
    """The launcher's --config flag (an ml_collections config file, `--config.<key>=` overrides). Its default is
    applied when the flags are parsed (`parse_flags`), not when it is defined: config_flags would load it, and
    raise on a mistyped override, while the launcher module is still being imported, before `run` can help."""
    _default_config[:] = [default] if default else []
    return config_flags.DEFINE_config_file("config", None, help)


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
    """absl's flag parsing with config_flag's default, where a bad flag is one ValueError or FileNotFoundError:
    a --config path that does not exist and a --config.<key> override the config lacks name the nearest valid
    ones, any other parse error is its first line. Returns the arguments left, as absl's parser does."""
    if _default_config and not any(_CONFIG_ARG.match(a) for a in argv[1:]):
        argv = [argv[0], f"--config={_default_config[0]}", *argv[1:]]
    path = next((a.split("=", 1)[1] for a in argv[1:] if _CONFIG_ARG.match(a) and "=" in a), None)
    if path is not None:
        config = _load_config(path)
        for arg in argv[1:]:
            if (m := _OVERRIDE_ARG.match(arg)) is not None:
                _check_override(config, m.group(1))
    try:
        return flag_values(argv)
    except (flags.Error, AttributeError, KeyError) as e:
        raise ValueError(str(e.args[0] if e.args else e).strip().splitlines()[0]) from e


def _load_config(path: str) -> ml_collections.ConfigDict:
    """The config file `path` ('file.py' or 'file.py:arg') loads, or FileNotFoundError naming its nearest
    siblings."""
    file = Path(os.path.abspath(path.split(":", 1)[0]))
    if not file.is_file():
        folder = file.parent if file.parent.is_dir() else Path("configs")
        near = difflib.get_close_matches(str(file), map(str, sorted(folder.rglob("*.py"))), n=3, cutoff=0.5)
        raise FileNotFoundError(f"--config={path}: {file} does not exist"
                                + (f"; nearest: {', '.join(os.path.relpath(n) for n in near)}" if near else ""))
    return config_file.load(file, *path.split(":", 1)[1:])


def _check_override(config, key: str) -> None:
    """ValueError unless `--config.<key>` addresses a field of `config`, naming the nearest valid keys."""
    try:
        parts = config_path.split(key)
    except ValueError:
        parts = None
    node = config
    for depth, part in enumerate(parts or [key]):
        if node is None:  # a field left None: config_flags makes its parents as the override needs
            return
        if isinstance(node, ml_collections.ConfigDict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, (tuple, list)) and isinstance(part, int) and -len(node) <= part < len(node):
            node = node[part]
        else:
            keys = [k for k in _dotted_keys(config) if _addressable(k)]
            near = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
            prefix = ".".join(map(str, parts[:depth])) if parts else ""
            valid = f"nearest valid: {', '.join(near)}" if near else "valid keys: " + ", ".join(
                k for k in keys if k.rpartition(".")[0] == prefix)
            what = "is not a config key" if parts else "cannot be addressed (each key must be a Python name)"
            raise ValueError(f"--config.{key} {what}; {valid}")


def _addressable(key: str) -> bool:
    return all(part.isidentifier() for part in key.split("."))


def _dotted_keys(config: ml_collections.ConfigDict, prefix: str = ""):
    """Every key of `config`, nested ones dotted (`probe.kind`), parents included."""
    for k, v in config.items():
        yield f"{prefix}{k}"
        if isinstance(v, ml_collections.ConfigDict):
            yield from _dotted_keys(v, f"{prefix}{k}.")


def run(main) -> None:
    """`absl.app.run(main)` as a jaxprobe launcher: absl and orbax INFO logs off (orbax logs every checkpoint);
    a ValueError or FileNotFoundError, which is how the flag parsing (`parse_flags`) and the library's up-front
    checks reject a bad input, printed as one line `error: <message>` on stderr with exit status 2 and no
    traceback (JAXPROBE_DEBUG=1 keeps the traceback, for an error raised deep inside a job rather than by a
    check); Ctrl-C as `exit_on_interrupt`; `--distributed` starts JAX's multi-host runtime before `main`."""
    app.run(functools.partial(_main, main), flags_parser=functools.partial(_one_line, parse_flags))


def _main(main, argv):
    logging.set_verbosity(logging.WARNING)
    exit_on_interrupt()

    def job():
        mesh.initialize(_DISTRIBUTED.value)
        return main(argv)
    return _one_line(job)


def _one_line(fn, *args):
    """fn(*args), with a ValueError or FileNotFoundError printed as `error: <message>` and exit status 2."""
    try:
        return fn(*args)
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
