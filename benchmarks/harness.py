"""What every benchmark shares: settings, timing, the machine line, the markdown file's sections and its summary
header, fresh worker processes, and running benchmarks by name."""
from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from jaxprobe import io
from jaxprobe.validate import check_choice

ROOT = Path(__file__).resolve().parents[1]
TOY_PIPELINE = ROOT / "assets" / "toy_pipeline"
# The toy LDM's 16 attn1 layers at 16x16 latents: (tokens side, channels, layer count); 64x64 labels.
TOY_LAYERS = ((16, 32, 5), (8, 64, 5), (4, 64, 4), (2, 64, 2))
# DPT-Large (Intel/dpt-large, MiDaS v3): the depth model the paper labels with.
DPT_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                 image_size=384, patch_size=16, backbone_out_indices=[5, 11, 17, 23],
                 neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256, readout_type="project")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What launch/bench.py's flags set; each benchmark reads the fields it needs. The defaults are the measured
    setting; `smoke` is a tiny one."""

    out: str = "BENCHMARKS.md"  # markdown file to update
    batch: int = 4  # prompts per batch
    steps: int = 15  # denoising steps
    repeats: int = 3  # timed repeats (best is kept)
    probe_images: int = 64  # training images for the probe benchmark
    probe_epochs: int = 3  # epochs for the probe benchmark (both sides)
    pipeline: str = str(TOY_PIPELINE)  # diffusers directory of intervene, capture and scaling
    captions: bool = True  # their prompts: toy-world captions (the toy LDM knows only their words), or short ones
    tiny: str = ""  # the sample benchmark's tiny random pipeline, saved (jaxprobe.testing.tiny_pipeline); "" = build
    sdxl: bool = True  # the sample benchmark also times the SDXL-structured stand-in against StableDiffusionXLPipeline
    edit_iterations: int = 128  # Adam iterations of each edit (the paper's)
    train_config: dict = dataclasses.field(default_factory=dict)  # overrides of configs/toy/ldm.py ("a.b": value)
    scaling_devices: tuple = (1, 2, 4, 8)  # XLA host device counts
    concept_config: dict = dataclasses.field(default_factory=dict)  # overrides of configs/concepts/toy.py
    dpt_config: dict = dataclasses.field(default_factory=lambda: dict(DPT_LARGE))  # transformers DPTConfig fields
    # the kernels benchmark's work: MobileNetV2 batch and resolution; probe-fit images, steps, epochs; the
    # flattened-map MLPs' input width (features_0 of the toy concept sweep)
    kernel_config: dict = dataclasses.field(default_factory=lambda: dict(batch=32, resolution=64, images=210,
                                                                         steps=15, epochs=2, flat_width=16384,
                                                                         attention_tokens=4096))
    # the device benchmark: 'sd_v1' (full size) or 'tiny' (jaxprobe.testing's tiny pipeline), images per batch,
    # denoising steps, probe-fit images and epochs, and whether each row runs in a fresh process
    device_config: dict = dataclasses.field(default_factory=lambda: dict(size="sd_v1", batch=8, steps=15,
                                                                         probe_images=16, probe_epochs=2,
                                                                         isolate=True))
    # the rehearsal: 'sd_v1' (full width) or 'tiny'; the staged flow's size, images and batch; the size and batch of
    # the one larger capture
    rehearsal_config: dict = dataclasses.field(default_factory=lambda: dict(size="sd_v1", resolution=256, images=8,
                                                                            batch=4, big_resolution=512, big_batch=2))


def smoke(out, tiny) -> Settings:
    """Every benchmark end to end at a tiny size (tests/benchmarks): the tiny random pipeline saved in `tiny` for
    every pipeline, 1-2 of everything, a tiny DPT and UNet. Its numbers say that a benchmark runs, not how fast
    anything is."""
    return Settings(out=str(out), batch=1, steps=2, repeats=1, probe_images=4, probe_epochs=1, pipeline=str(tiny),
                    captions=False, tiny=str(tiny), edit_iterations=2, scaling_devices=(1, 2),
                    train_config={"block_out_channels": (8, 8, 8, 8), "norm_num_groups": 4, "batch_size": 2,
                                  "text_layers": 1, "text_width": 16, "text_heads": 2},
                    concept_config={"data.num_images": 60, "num_positive": 6, "num_negative": 12,
                                    "layers": ("features_1", "features_18"), "families": ("linear_gap",),
                                    "probe.epochs": 1, "capture_batch_size": 60},
                    dpt_config={"hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2,
                                "intermediate_size": 32, "image_size": 32, "patch_size": 16,
                                "backbone_out_indices": [0, 1, 2, 3], "neck_hidden_sizes": [8, 8, 16, 16],
                                "fusion_hidden_size": 8, "readout_type": "project"},
                    kernel_config=dict(batch=2, resolution=16, images=8, steps=1, epochs=1, flat_width=64,
                                      attention_tokens=64),
                    device_config=dict(size="tiny", batch=1, steps=1, probe_images=2, probe_epochs=1, isolate=False),
                    rehearsal_config=dict(size="tiny", resolution=16, images=4, batch=2, big_resolution=32,
                                          big_batch=2))


def best_time(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1) -> float:
    """Best wall-clock seconds of `fn()` over `repeats` runs after `warmup` runs (which absorb jit compilation)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measured(load: float) -> str:
    """A section's date and the 1-min load average `load` taken at its start (`os.getloadavg()[0]`): the summary
    table reads the date back ('Measured YYYY-MM-DD')."""
    return f"Measured {datetime.date.today()}; 1-min load average {load:.1f} at the start"


def machine() -> str:
    import jax
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} on " \
           f"{jax.devices()[0].platform}"


def worker(call: str, args, xla_flags: str) -> dict:
    """`benchmarks.<call>(*args)` (JSON values) in a fresh Python with XLA_FLAGS=`xla_flags` (the XLA device count
    is fixed when jax starts); its dict is returned through the last line of its stdout."""
    module, fn = call.rsplit(".", 1)
    code = (f"import json, sys; from benchmarks import {module}; "
            f"print(json.dumps({module}.{fn}(*json.loads(sys.argv[1]))))")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "XLA_FLAGS": xla_flags, "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], env=env, capture_output=True, text=True)
    if done.returncode:  # its traceback, which check=True's CalledProcessError would leave unseen
        raise RuntimeError(f"benchmark worker {call} exited {done.returncode}; its stderr ends:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_section(path, name: str, body: str) -> None:
    """Replace (or append) the `## name` section of the markdown file at `path`."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# jaxprobe benchmarks\n\nWritten by `launch/bench.py`.\n"
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    with io.atomic_path(path) as tmp:
        tmp.write_text(text)


# Each benchmark (a module of this package with `run(settings) -> section`) and its goal (issues 5-21), shown
# beside its headline figure in the summary.
GOALS = {"sample": "faster than diffusers PyTorch (> 1x)", "intervene": ">= 10x", "probe": ">= 20x",
         "capture": "<= 1.15x", "train": "> 1x (toy recipe: <= 40 min, docs/toy_models.md)",
         "concepts": ">= 20x (above this CPU's roofline ceiling, in the section)",
         "scaling": "measured (no goal on a 2-core CPU)",
         "dpt": "measured (label stage cost)", "kernels": "> 1x for every CPU rewrite (on CPU)",
         "device": "UNet bf16 images/s: faster than diffusers fp16 on the same GPU, >= 40 % MFU",
         "rehearsal": "measured: the paper's staged flow at full width fits this host, or says why before compiling"}
VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "torch", "diffusers", "transformers")


def names(requested) -> list[str]:
    """The benchmarks `requested` names (all if none, or 'all'); an unknown name is a ValueError."""
    chosen = [n for n in requested if n != "all"] or list(GOALS)
    for name in chosen:
        check_choice("benchmark", name, GOALS)
    return chosen


def run(requested, settings: Settings) -> Iterator[str]:
    """The `requested` benchmarks (`names`), run one by one as the result is iterated; each writes its section to
    `settings.out`, refreshes the summary at the top, and yields the section. An unknown name is a ValueError here,
    before anything runs."""
    chosen = names(requested)

    def one(name):
        body = importlib.import_module(f"benchmarks.{name}").run(settings)
        write_section(settings.out, name, body)
        write_summary(settings.out)
        return body

    return (one(name) for name in chosen)


def write_summary(path) -> None:
    """The file's header: machine, versions, and one row per section present: its headline figure (the first bold
    one), its goal, its command and its date (a 'Measured YYYY-MM-DD' in the section)."""
    from importlib import metadata
    path = Path(path)
    text = path.read_text()
    first = text.find("\n## ")
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, re.S | re.M))
    rows = []
    for name in GOALS:
        if name in sections:
            figure = re.search(r"\*\*([^*]+)\*\*", sections[name])
            measured = re.search(r"Measured\s+(\d{4}-\d\d-\d\d)", sections[name])
            rows.append(f"| [{name}](#{name}) | {figure[1] if figure else '-'} | {GOALS[name]} | "
                        f"`python launch/bench.py {name}` | {measured[1] if measured else 'undated: stale'} |")
    versions = ", ".join(f"{p} {_version(metadata, p)}" for p in VERSIONED)
    header = f"""# jaxprobe benchmarks

Written by `python launch/bench.py all` (or one name); each section states its setting and was measured in one run,
both sides together. Machine: {machine()}. Versions: {versions}.

| benchmark | headline | goal | command | measured (a section without a date was written before sections carried one, by older code: rerun it) |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}
"""
    with io.atomic_path(path) as tmp:
        tmp.write_text(header + (text[first:] if first >= 0 else ""))


def _version(metadata, package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
