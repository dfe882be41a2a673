"""rehearsal: the paper's staged scene flow at the real width on this machine, run as a user runs it. A full-width
SD v1 with random weights that diffusers writes (`device.write_pipeline`) and a random DPT of `dpt_config`'s size
(DPT-Large) that transformers writes; then `launch/probe.py --config=configs/scene/sd_v1_paper.py` stage by stage
(capture, label with random segmentations and the DPT's depth, fit, report), each in its own process, and one more
capture of a single batch at a larger size. Each stage's wall time, XLA compile time, peak resident memory (the
process's own `wait4` rusage), the job's memory estimate (the capture's hint line) and the store's bytes per image.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import device
from benchmarks.harness import ROOT, Settings, machine, measured

CONFIG = ROOT / "configs" / "scene" / "sd_v1_paper.py"
COMPILED = re.compile(r"Finished XLA compilation of .*? in ([\d.]+) sec")
HINT = re.compile(r"memory estimate: ([\d.]+) GiB")


def run(s: Settings) -> str:
    k = s.rehearsal_config
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipeline, dpt, prompts = write_inputs(tmp, k, s.dpt_config)
        rows = flow(tmp, pipeline, dpt, prompts, k)
    return report(rows, k, s.dpt_config, load)


def write_inputs(tmp: Path, k: dict, dpt_config: dict) -> tuple[Path, Path, Path]:
    """The random pipeline, the random DPT and a prompts file, as a user's local directories."""
    import torch
    import transformers

    device.write_pipeline(tmp / "sd", {"size": k["size"]})
    torch.manual_seed(0)
    transformers.DPTForDepthEstimation(transformers.DPTConfig(**dpt_config)).save_pretrained(tmp / "dpt")
    (tmp / "prompts.txt").write_text("".join(f"a photograph of object {i} on a table\n" for i in range(k["images"])))
    return tmp / "sd", tmp / "dpt", tmp / "prompts.txt"


def flow(tmp: Path, pipeline: Path, dpt: Path, prompts: Path, k: dict) -> list[dict]:
    """Every stage at k['resolution'] on k['images'] images, then one capture batch at k['big_resolution']."""
    n, res = k["images"], k["resolution"]
    work, labels = tmp / "run", tmp / "labels"

    def args(resolution, images, batch, stage, workdir, *more):
        train = images // 2
        return [f"--config={CONFIG}", f"--config.pipeline_dir={pipeline}", f"--config.prompts_file={prompts}",
                f"--config.resolution={resolution}", f"--config.num_train={train}",
                f"--config.num_val={train // 4}", f"--config.num_test={images - train}",
                f"--config.batch_size={batch}", f"--config.stage={stage}", f"--workdir={workdir}", *more]

    rows = [stage("capture", res, n, args(res, n, k["batch"], "capture", work), work)]
    labels.mkdir()
    shutil.copy(work / "images" / "index.csv", labels)
    np.save(labels / "segmentation.npy", np.random.default_rng(0).integers(0, 4, (n, res, res), dtype=np.int32))
    for name, more in (("label", (f"--config.labels_dir={labels}", f"--config.depth_model_dir={dpt}")),
                       ("fit", ()), ("report", ())):
        rows.append(stage(name, res, n, args(res, n, k["batch"], name, work, *more), work))
    big, b = k["big_resolution"], k["big_batch"]
    rows.append(stage("capture", big, b, args(big, b, b, "capture", tmp / "big"), tmp / "big"))
    return rows


def stage(name: str, resolution: int, images: int, argv: list[str], workdir: Path) -> dict:
    """One `launch/probe.py` stage in a fresh process; a stage killed by the kernel (out of memory) is a row too."""
    log = workdir.with_name(f"{workdir.name}_{name}_{resolution}.log")
    env = {**os.environ, "JAX_LOG_COMPILES": "1"}
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "launch" / "probe.py"), *argv], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    text = log.read_text()
    code = os.waitstatus_to_exitcode(status)
    if code > 0:
        raise RuntimeError(f"rehearsal stage {name} at {resolution}^2 failed (exit {code}):\n{text[-3000:]}")
    hint = HINT.search(text)
    store = workdir / "activations"
    return {"stage": name, "resolution": resolution, "images": images, "seconds": seconds,
            "compile": sum(float(x) for x in COMPILED.findall(text)), "peak_rss": usage.ru_maxrss * 1024,
            "estimate": float(hint[1]) if hint else None, "killed": -code if code < 0 else None,
            "store_per_image": sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / images
            if name == "capture" and store.exists() else None}


def report(rows: list[dict], k: dict, dpt_config: dict, load: float) -> str:
    from jaxprobe.jobs import host_memory

    gib = 2 ** 30
    ram = host_memory() / gib

    def line(r):
        status = f"killed (signal {r['killed']})" if r["killed"] else "ok"
        store = f"{r['store_per_image'] / 1e6:.1f}" if r["store_per_image"] is not None else "-"
        estimate = f"{r['estimate']:.1f}" if r["estimate"] is not None else "-"
        return (f"| {r['stage']} | {r['resolution']}² | {r['images']} | {r['seconds'] / 60:.1f} | "
                f"{r['compile']:.0f} | {r['peak_rss'] / gib:.1f} | {estimate} | {store} | {status} |")

    big = rows[-1]
    said = "none printed" if big["estimate"] is None else f"at least {big['estimate']:.1f} GiB"
    width = "full-width SD v1 (860 M UNet)" if k["size"] == "sd_v1" else "the tiny test pipeline"
    return f"""{measured(load)}. Machine: {machine()}, {ram:.1f} GiB RAM.

`configs/scene/sd_v1_paper.py` run stage by stage by `launch/probe.py` on {width} with random weights written by
diffusers' `save_pretrained`, a random DPT ({dpt_config['num_hidden_layers']} layers x {dpt_config['hidden_size']},
{dpt_config['image_size']}²) for depth, random segmentations for the salient object; the first four rows on
{k['images']} images (batch {k['batch']}, every attn1 layer x 15 steps, both baselines, bf16 store), the last
one capture batch of {k['big_batch']} at {k['big_resolution']}². Each stage in a fresh process: wall minutes
(loading included), XLA compile seconds (summed over the stage's programs), peak resident memory, the capture's
own estimate printed before it compiles (`jobs.check_memory`: a lower bound), and the activation store's bytes per image (MB = 10⁶ bytes). Command:
`python launch/bench.py rehearsal` (docs/scale-out.md).

| stage | size | images | wall min | compile s | peak RSS GiB | estimate GiB | store MB/image | result |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(line(r) for r in rows)}

The {big['resolution']}² capture, one batch of {big['images']}: **{big['peak_rss'] / gib:.1f} GiB peak RSS** on a
{ram:.1f} GiB host ({'killed' if big['killed'] else 'it fits'}; the estimate before it compiled: {said}).
"""
