"""device: what jaxprobe costs on an accelerator at the real size, in one run (designed for <= 8 min on one H100,
compiles included). Full-size SD v1 with random weights that diffusers writes (`save_pretrained` to a temp dir;
nothing is downloaded): the UNet in bf16 against diffusers PyTorch fp16 on the same device, its model FLOPs
utilisation (XLA's cost analysis over the time, against the chip's peak), plain sampling, capture, the
intervention, probe fits at SD v1's layer sizes and DPT-Large, each with its peak device memory. `--smoke` runs the
same code at a tiny size on a CPU (tests/benchmarks/test_smoke.py)."""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from benchmarks.harness import Settings, best_time, measured, worker

# SD v1's components as diffusers / transformers configs (the v1-4 checkpoint's config.json files). The text
# encoder keeps SD v1's shape with a character-level vocabulary (`jaxprobe.testing.write_char_tokenizer`), since
# CLIP's BPE vocabulary would be a download; its cost is the same.
SD_V1_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2, "norm_num_groups": 32, "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}
SD_V1_VAE = {
    "block_out_channels": [128, 256, 512, 512], "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "norm_num_groups": 32, "layers_per_block": 2, "sample_size": 512, "scaling_factor": 0.18215,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
SD_V1_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
              "max_position_embeddings": 77, "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"}
# Dense bf16 peak FLOP/s per chip (vendor data sheets), by a substring of `device_kind`; the first match wins.
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
             ("L4", 121e12), ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5p", 459e12),
             ("TPU v6 lite", 918e12))
GUIDANCE = 7.5


def run(s: Settings) -> str:
    """Every row (`measure`), each in a fresh process at full size so that its peak memory is its own."""
    load = os.getloadavg()[0]
    import jax

    k = s.device_config
    with tempfile.TemporaryDirectory() as tmp:
        write_pipeline(tmp, k)
        out = {row: (worker("device.measure", [row, tmp, k, s.repeats, s.edit_iterations, s.dpt_config],
                            os.environ.get("XLA_FLAGS", ""))
                     if k["isolate"] else measure(row, tmp, k, s.repeats, s.edit_iterations, s.dpt_config))
               for row in ROWS}
    return report(out, k, s, jax.devices(), load)


def write_pipeline(directory, k: dict):
    """A random StableDiffusionPipeline of `k`'s size, saved by diffusers' `save_pretrained` to `directory`:
    'sd_v1', or 'tiny' (`jaxprobe.testing`'s tiny pipeline with one layer per block and one text layer, 16x16
    images: what compiles fastest)."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from jaxprobe import testing

    directory = Path(directory)
    full = k["size"] == "sd_v1"
    unet, vae = (SD_V1_UNET, SD_V1_VAE) if full else ({**testing.UNET_CONFIG, "layers_per_block": 1},
                                                      testing.VAE_CONFIG)
    text = SD_V1_TEXT if full else {**{key: testing.TEXT_ENCODER_CONFIG[key] for key in SD_V1_TEXT},
                                    "num_hidden_layers": 1}
    vocab = testing.write_char_tokenizer(directory / "tokenizer", text["max_position_embeddings"])
    torch.manual_seed(0)
    pipe = diffusers.StableDiffusionPipeline(
        unet=diffusers.UNet2DConditionModel(**_arguments(unet)), vae=diffusers.AutoencoderKL(**_arguments(vae)),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text, vocab_size=vocab, bos_token_id=vocab - 2,
                                                  eos_token_id=vocab - 1, pad_token_id=vocab - 1)),
        tokenizer=CLIPTokenizer.from_pretrained(str(directory / "tokenizer")),
        scheduler=diffusers.LMSDiscreteScheduler(**_arguments(testing.SCHEDULER_CONFIG)),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(directory))


def _arguments(config: dict) -> dict:
    """A diffusers config.json's constructor arguments (without its '_class_name'-style metadata)."""
    return {n: v for n, v in config.items() if not n.startswith("_")}


def measure(row: str, directory: str, k: dict, repeats: int, iterations: int, dpt_config: dict) -> dict:
    """One row: {'seconds': best time of one call, 'peak_bytes': the device's peak (None where the backend keeps no
    statistics), plus the row's own figures}, or {'skipped': why}."""
    import jax

    got = ROW_FNS[row](directory, k, repeats, iterations, dpt_config)
    if "skipped" not in got and "peak_bytes" not in got:
        stats = jax.devices()[0].memory_stats() or {}
        got["peak_bytes"] = stats.get("peak_bytes_in_use")
    return got


@functools.lru_cache(maxsize=1)  # rows that share a process share the loaded pipeline
def _pipeline(directory):
    from jaxprobe.models import load_pipeline
    return load_pipeline(directory)


def _prompts(k):
    return [f"a photograph of object {i}" for i in range(k["batch"])]


def _unet(directory, k, repeats, *_):
    """One UNet call on a batch of latents in bf16, and its FLOPs from XLA's cost analysis."""
    import jax
    import jax.numpy as jnp

    from jaxprobe.diffusion import sampling

    pipe = _pipeline(directory)
    unet = pipe.unet.clone(dtype=jnp.bfloat16)
    params = sampling.cast_params(pipe.params["unet"], jnp.bfloat16)
    c, b = unet.config, k["batch"]
    x = jax.random.normal(jax.random.key(0), (b, c.sample_size, c.sample_size, c.in_channels), jnp.bfloat16)
    t = jnp.full((b,), 500, jnp.int32)
    ctx = jax.random.normal(jax.random.key(1), (b, 77, c.cross_attention_dim), jnp.bfloat16)
    compiled = jax.jit(lambda p, x, t, ctx: unet.apply({"params": p}, x, t, ctx)).lower(params, x, t, ctx).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    seconds = best_time(lambda: jax.block_until_ready(compiled(params, x, t, ctx)), repeats=repeats)
    return {"seconds": seconds, "flops": float(cost["flops"])}


def _unet_torch(directory, k, repeats, *_):
    """diffusers' UNet in fp16 on the same batch, on CUDA (skipped without it: a CPU has no fp16 reference)."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": f"torch {torch.__version__} has no CUDA"}
    import diffusers

    unet = diffusers.UNet2DConditionModel.from_pretrained(Path(directory) / "unet", torch_dtype=torch.float16)
    unet = unet.to("cuda").eval()
    c, b = unet.config, k["batch"]
    x = torch.randn(b, c.in_channels, c.sample_size, c.sample_size, device="cuda", dtype=torch.float16)
    t = torch.full((b,), 500, device="cuda")
    ctx = torch.randn(b, 77, c.cross_attention_dim, device="cuda", dtype=torch.float16)

    def call():
        with torch.no_grad():
            unet(x, t, ctx)
        torch.cuda.synchronize()

    torch.cuda.reset_peak_memory_stats()
    seconds = best_time(call, repeats=repeats)
    return {"seconds": seconds, "peak_bytes": torch.cuda.max_memory_allocated(), "torch": torch.__version__}


def _sample(directory, k, repeats, *_, hook=None, extra=None):
    """Plain bf16 sampling of a batch (LMS, CFG 7.5, VAE decode), or with a hook (capture, the edit)."""
    import jax

    from jaxprobe.diffusion import sampling

    pipe = _pipeline(directory)
    kw = dict(num_inference_steps=k["steps"], guidance_scale=GUIDANCE, dtype="bfloat16", seed=0)
    if hook is not None:
        hook, extra = hook(pipe, k)
        kw.update(hook=hook, extra=extra)
    return {"seconds": best_time(lambda: jax.block_until_ready(sampling.sample(pipe, _prompts(k), **kw).latents),
                                 repeats=repeats), "size": pipe.default_size}


def _capture(directory, k, repeats, *_):
    """Sampling that records every attn1 layer at every step (the scene sweep's capture)."""
    import jax

    from jaxprobe.scene import capture

    pipe = _pipeline(directory)
    run = lambda: jax.block_until_ready(capture.capture_activations(  # noqa: E731
        pipe, _prompts(k), num_inference_steps=k["steps"], dtype="bfloat16", store_dtype="bfloat16")[1])
    return {"seconds": best_time(run, repeats=repeats), "layers": len(run())}


def _intervene(directory, k, repeats, iterations, _):
    """Sampling with the paper's edit (benchmarks/intervene.py's problem: the up-block attn1 layers at the first 5
    steps, `iterations` Adam steps each)."""
    import jax.numpy as jnp

    from benchmarks import intervene
    from jaxprobe.scene import intervene as scene_intervene
    from jaxprobe.scene.tasks import SALIENCY

    def edit(pipe, k):
        layers, probe_set, target = intervene.edit_problem(pipe, k["batch"], k["steps"])
        steps = sorted({step for _, step in probe_set.probes})
        stacked, active = scene_intervene.edit_inputs(probe_set, layers, steps, k["steps"])
        return (scene_intervene.EditHook(layers=layers, task=SALIENCY, lr=intervene.EDIT_LR, iterations=iterations),
                {"probes": stacked, "active": active, "target": jnp.asarray(target)})

    return _sample(directory, k, repeats, hook=edit)


def _probe(directory, k, repeats, *_):
    """Linear saliency probes for every attn1 layer x step at the UNet's layer sizes (shapes traced from it), on
    random bf16 activations on the device: `fit.fit_group` per shape group, `k['probe_epochs']` epochs, batch 4."""
    import jax
    import jax.numpy as jnp

    from jaxprobe import hooks
    from jaxprobe.probing import fit
    from jaxprobe.scene.capture import DEFAULT_LAYERS
    from jaxprobe.scene.tasks import SALIENCY

    pipe = _pipeline(directory)
    c = pipe.unet.config
    layers = hooks.select_layers(pipe.unet, DEFAULT_LAYERS)
    shapes = jax.eval_shape(lambda p: hooks.apply(
        pipe.unet, p, jnp.zeros((1, c.sample_size, c.sample_size, c.in_channels)), jnp.zeros((1,), jnp.int32),
        jnp.zeros((1, 77, c.cross_attention_dim)), record=layers)[1], pipe.params["unet"])
    groups = {}
    for layer in layers:
        _, tokens, channels = shapes[layer].shape
        groups[(int(round(tokens ** 0.5)), channels)] = groups.get((int(round(tokens ** 0.5)), channels), 0) + 1
    n, res, steps = k["probe_images"], pipe.default_size, k["steps"]
    labels = jax.random.bernoulli(jax.random.key(0), 0.3, (n, res, res))
    data = [jax.random.normal(jax.random.key(i + 1), (n, count * steps, side, side, ch), jnp.bfloat16)
            for i, ((side, ch), count) in enumerate(groups.items())]

    def fits():
        for x in data:
            jax.block_until_ready(fit.fit_group(x, labels, SALIENCY, epochs=k["probe_epochs"], batch_size=4))

    seconds = best_time(fits, repeats=repeats)
    probes = sum(x.shape[1] for x in data)
    return {"seconds": seconds, "probe_epochs": probes * k["probe_epochs"], "probes": probes,
            "groups": ", ".join(f"{count * steps}x {side}x{side}x{ch}" for (side, ch), count in groups.items())}


def _dpt(directory, k, repeats, _, dpt_config):
    """A random DPT (DPT-Large at full size) saved by transformers, jaxprobe's Flax DPT in one jit, fp32."""
    import jax
    import numpy as np
    import torch
    import transformers

    from jaxprobe.models import load_dpt

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        transformers.DPTForDepthEstimation(transformers.DPTConfig(**dpt_config)).save_pretrained(tmp)
        module, params = load_dpt(tmp)
    size = dpt_config["image_size"]
    pixels = np.random.default_rng(0).normal(size=(k["batch"], size, size, 3)).astype(np.float32)
    apply = jax.jit(module.apply)
    return {"seconds": best_time(lambda: jax.block_until_ready(apply({"params": params}, pixels)),
                                 repeats=repeats), "size": size}


ROW_FNS = {"unet": _unet, "unet_torch": _unet_torch, "sample": _sample, "capture": _capture,
           "intervene": _intervene, "probe": _probe, "dpt": _dpt}
ROWS = tuple(ROW_FNS)


def peak_flops(device_kind: str) -> float | None:
    """The chip's dense bf16 peak FLOP/s from `PEAK_BF16`, or None for a chip not listed (a CPU)."""
    return next((peak for name, peak in PEAK_BF16 if name in device_kind), None)


def report(out: dict, k: dict, s: Settings, devices, load: float) -> str:
    """The section: one table row per measurement, with images/s where a row makes images."""
    b, device, res = k["batch"], devices[0], out["sample"]["size"]

    def mem(r):
        return "n/a" if r.get("peak_bytes") is None else f"{r['peak_bytes'] / 2 ** 30:.2f}"

    unet, torch_unet, plain = out["unet"], out["unet_torch"], out["sample"]
    peak = peak_flops(device.device_kind)
    mfu = "unknown (no peak listed for this device)" if peak is None else \
        f"{100 * unet['flops'] / unet['seconds'] / peak:.1f} %"
    if "skipped" in torch_unet:
        torch_row = f"| diffusers PyTorch fp16 UNet, one call | skipped: {torch_unet['skipped']} | - | - | n/a |"
        vs_torch = f"not measured ({torch_unet['skipped']})"
    else:
        torch_row = (f"| diffusers PyTorch {torch_unet['torch']} fp16 UNet, one call | {torch_unet['seconds']:.4f} | "
                     f"{b / torch_unet['seconds']:.2f} | - | {mem(torch_unet)} |")
        vs_torch = f"{torch_unet['seconds'] / unet['seconds']:.2f}x diffusers fp16"
    rows = [f"| jaxprobe UNet bf16, one call (`unet.apply`, one jit) | {unet['seconds']:.4f} | "
            f"{b / unet['seconds']:.2f} | 1.00x | {mem(unet)} |", torch_row]
    for name, label in (("sample", f"plain sampling (LMS {k['steps']} steps, CFG 7.5, VAE decode)"),
                        ("capture", f"+ capture of {out['capture']['layers']} attn1 layers x {k['steps']} steps"),
                        ("intervene", f"+ the paper's edit (up-block attn1 at the first {min(5, k['steps'])} steps, "
                                      f"{s.edit_iterations} Adam iterations)")):
        r = out[name]
        rows.append(f"| {label} | {r['seconds']:.4f} | {b / r['seconds']:.2f} | "
                    f"{r['seconds'] / plain['seconds']:.2f}x sampling | {mem(r)} |")
    probe, dpt = out["probe"], out["dpt"]
    rows.append(f"| probe fits, {probe['probes']} linear saliency probes ({probe['groups']}), "
                f"{k['probe_images']} images, {k['probe_epochs']} epochs | {probe['seconds']:.4f} | - | "
                f"{probe['probe_epochs'] / probe['seconds']:.1f} probe-epochs/s | {mem(probe)} |")
    rows.append(f"| DPT fp32 at {dpt['size']}x{dpt['size']} (label stage) | {dpt['seconds']:.4f} | "
                f"{b / dpt['seconds']:.2f} | - | {mem(dpt)} |")
    size = "full-size SD v1 (UNet 860 M parameters)" if k["size"] == "sd_v1" else "a tiny random SD pipeline"
    where = ("each row in a fresh process, so each peak is its own" if k["isolate"] else
             "every row in one process, so a peak is the run's so far")
    return f"""{measured(load)}.

Device: {device.device_kind} ({device.platform}, {len(devices)} device(s) seen, one used). {size},
random weights written by diffusers' `save_pretrained`, {res}x{res} images, batch {b}, bf16 compute unless said;
{where}; best of {s.repeats} after a warm-up that compiles.
Peak memory: the device's `memory_stats()['peak_bytes_in_use']` (PyTorch: `max_memory_allocated`), GiB; n/a where
the backend keeps none.

| what | s / call | images / s | vs | peak GiB |
| --- | ---: | ---: | --- | ---: |
{chr(10).join(rows)}

UNet bf16: **{b / unet['seconds']:.2f}** images/s per call, {vs_torch}; model FLOPs utilisation
{mfu} ({unet['flops'] / 1e9:.4g} GFLOP per call from XLA's cost analysis). Goals: faster than diffusers
fp16 on the same GPU, >= 40 % MFU. Command: `python launch/bench.py device` (docs/scale-out.md)."""
