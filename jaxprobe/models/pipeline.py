"""A Stable Diffusion pipeline directory as one object: UNet, VAE, CLIP text encoder(s), tokenizer(s), scheduler config.

`load_pipeline(dir)` reads what `diffusers.StableDiffusionPipeline.save_pretrained` writes (unet/, vae/,
text_encoder/, tokenizer/, scheduler/; SD 1.x and 2.x) and what `StableDiffusionXLPipeline.save_pretrained` writes
(the same plus text_encoder_2/ and tokenizer_2/); `save_pipeline` writes the same layouts, so pipelines that
jaxprobe trains load in diffusers too.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxprobe import io
from jaxprobe.models import load
from jaxprobe.models.unet import TIME_IDS

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
XL_COMPONENTS = COMPONENTS + ("text_encoder_2", "tokenizer_2")
# model_index.json `_class_name` -> the sub-directories that pipeline needs (an image-to-image pipeline saves the
# same models as its text-to-image one).
PIPELINE_CLASSES = {"StableDiffusionPipeline": COMPONENTS, "StableDiffusionImg2ImgPipeline": COMPONENTS,
                    "StableDiffusionXLPipeline": XL_COMPONENTS, "StableDiffusionXLImg2ImgPipeline": XL_COMPONENTS}


class XLTextInputs(NamedTuple):
    """What SDXL's text encoding reads, per row of the UNet batch ([negatives,] prompts): ids int32 [B', T]
    (tokenizer), ids_2 int32 [B', T] (tokenizer_2), time_ids float32 [B', 6] (original size, crop top-left, target
    size) and zero bool [B']: rows whose embeddings are zeros (an empty negative prompt where the pipeline has
    `force_zeros_for_empty_prompt`, as diffusers' `negative_prompt=None`)."""

    ids: np.ndarray
    ids_2: np.ndarray
    time_ids: np.ndarray
    zero: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: jit caches key on it
class Pipeline:
    """Modules, their fp32 params (`params['unet' | 'vae' | 'text_encoder' (| 'text_encoder_2')]`), tokenizer(s)
    and scheduler config. SDXL pipelines also have `text_encoder_2` (a CLIPTextModelWithProjection) and
    `tokenizer_2`."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    params: dict
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    force_zeros_for_empty_prompt: bool = False

    @property
    def is_xl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (8 for SD v1)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    def tokenize(self, prompts: list[str]) -> np.ndarray:
        """Prompts -> int32 ids [B, max_length], padded as diffusers does; a too-long prompt is an error."""
        return tokenize(self.tokenizer, prompts)

    def text_inputs(self, prompts: list[str], negative_prompt: str | None, size: tuple[int, int]):
        """The text encoders' inputs for [negative x B, prompts] (`negative_prompt` None: no CFG, prompts only):
        ids int32 [B', T] (SD v1/v2), or `XLTextInputs` for `size` (height, width) images (SDXL: no crop, original
        size = target size, as diffusers' defaults)."""
        prompts = list(prompts)
        rows = prompts if negative_prompt is None else [negative_prompt] * len(prompts) + prompts
        ids = self.tokenize(rows)
        if not self.is_xl:
            return ids
        zero = np.zeros(len(rows), bool)
        if negative_prompt == "" and self.force_zeros_for_empty_prompt:
            zero[:len(prompts)] = True
        time_ids = np.tile(np.asarray([*size, 0, 0, *size], np.float32), (len(rows), 1))
        return XLTextInputs(ids, tokenize(self.tokenizer_2, rows), time_ids, zero)


def load_tokenizer(directory):
    """A CLIP tokenizer from a local `tokenizer/` directory (vocab.json + merges.txt or tokenizer.json)."""
    # transformers is only a tokenizer here: without torch it would advise at import that models are unavailable.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers import CLIPTokenizer
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"no tokenizer directory at {directory}")
    return CLIPTokenizer.from_pretrained(str(directory), local_files_only=True)


def tokenize(tokenizer, prompts) -> np.ndarray:
    if isinstance(prompts, str):
        prompts = [prompts]
    max_length = tokenizer.model_max_length
    ids = tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=False)["input_ids"]
    too_long = [(p, len(i)) for p, i in zip(prompts, ids) if len(i) > max_length]
    if too_long:
        p, n = too_long[0]
        raise ValueError(f"prompt is {n} tokens, longer than the tokenizer's max length {max_length}: {p[:80]!r}")
    return np.asarray(ids, dtype=np.int32)


def pipeline_class(directory: Path) -> str:
    """model_index.json's `_class_name` (StableDiffusionPipeline where there is no model_index.json); a class
    jaxprobe does not load is an error naming the ones it does."""
    index = directory / "model_index.json"
    name = load.read_json(index, "pipeline index").get("_class_name") if index.is_file() else None
    name = name or "StableDiffusionPipeline"
    if name not in PIPELINE_CLASSES:
        raise ValueError(f"{index}: pipeline class {name!r} is not supported; supported: "
                         f"{', '.join(PIPELINE_CLASSES)}")
    return name


def load_pipeline(directory, *, dtype=None, variant=None, weights: bool = True) -> Pipeline:
    """A diffusers pipeline directory (SD 1.x, 2.x or XL) -> Pipeline (fp32 params; `dtype` is the modules'
    compute dtype). `weights=False`: the params are ShapeDtypeStructs and no weight file is read, for a job that
    needs the modules, tokenizers and shapes only (a sweep's label, fit and report stages: 4 GB less for SD v1).

    `variant` (e.g. "fp16") picks each model's `<name>.<variant>.safetensors`; without it, each model reads its
    plain weights or its only variant (see `load.read_weights`).
    """
    directory = Path(os.path.abspath(directory))  # absolute for the messages; symlinks kept
    if not directory.exists():  # not "missing unet/, vae/, ...": the whole path is wrong
        raise FileNotFoundError(f"pipeline directory {directory} does not exist (not a diffusers pipeline directory)")
    kind = pipeline_class(directory)
    missing = [c for c in PIPELINE_CLASSES[kind] if not (directory / c).is_dir()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a diffusers {kind} directory: missing "
                                f"{', '.join(c + '/' for c in missing)}")
    models = {name: build(directory / name, dtype=dtype, variant=variant, weights=weights) for name, build in
              (("unet", load.load_unet), ("vae", load.load_vae), ("text_encoder", load.load_text_encoder),
               ("text_encoder_2", load.load_text_encoder)) if name in PIPELINE_CLASSES[kind]}
    xl = {}
    if "text_encoder_2" in PIPELINE_CLASSES[kind]:
        xl = {"text_encoder_2": models["text_encoder_2"][0], "tokenizer_2": load_tokenizer(directory / "tokenizer_2"),
              "force_zeros_for_empty_prompt": bool(load.read_json(directory / "model_index.json", "pipeline index")
                                                   .get("force_zeros_for_empty_prompt", True))}
    _check_widths({name: m for name, (m, _) in models.items()})
    sched = load.read_json(directory / "scheduler" / "scheduler_config.json", "scheduler config")
    return Pipeline(unet=models["unet"][0], vae=models["vae"][0], text_encoder=models["text_encoder"][0],
                    tokenizer=load_tokenizer(directory / "tokenizer"), scheduler_config=sched,
                    params={name: p for name, (_, p) in models.items()}, **xl)


def _check_widths(models: dict) -> None:
    """The text encoders' widths against the UNet's, before anything compiles."""
    unet = models["unet"].config
    text = [models[n].config for n in ("text_encoder", "text_encoder_2") if n in models]
    width = sum(t.hidden_size for t in text)
    if width != unet.cross_attention_dim:
        what = " + ".join(str(t.hidden_size) for t in text)
        raise ValueError(f"text encoder width {what} does not match the UNet's cross_attention_dim "
                         f"{unet.cross_attention_dim}")
    if len(text) == 2:
        want = TIME_IDS * (unet.addition_time_embed_dim or 0) + text[1].projection_dim
        if unet.addition_embed_type != "text_time" or unet.projection_class_embeddings_input_dim != want:
            raise ValueError(f"an SDXL UNet needs addition_embed_type='text_time' and "
                             f"projection_class_embeddings_input_dim = {TIME_IDS} x addition_time_embed_dim + "
                             f"text_encoder_2's projection_dim = {want}; its config has "
                             f"{unet.addition_embed_type!r}, {unet.projection_class_embeddings_input_dim}")


def save_pipeline(directory, pipe: Pipeline) -> None:
    """Write `pipe` as a diffusers StableDiffusionPipeline (or StableDiffusionXLPipeline) directory, atomically."""
    models = (("unet", load.DIFFUSERS_WEIGHTS), ("vae", load.DIFFUSERS_WEIGHTS),
              ("text_encoder", load.TRANSFORMERS_WEIGHTS)) + ((("text_encoder_2", load.TRANSFORMERS_WEIGHTS),)
                                                               if pipe.is_xl else ())
    with io.atomic_dir(directory) as tmp:
        for name, weights_name in models:
            load.write_component(tmp / name, getattr(pipe, name), pipe.params[name], weights_name=weights_name)
        for name in ("tokenizer", "tokenizer_2") if pipe.is_xl else ("tokenizer",):
            getattr(pipe, name).save_pretrained(str(tmp / name))
        io.write_text(tmp / "scheduler" / "scheduler_config.json", json.dumps(pipe.scheduler_config, indent=2))
        io.write_text(tmp / "model_index.json", json.dumps(_model_index(pipe), indent=2))


def _model_index(pipe: Pipeline) -> dict:
    common = {
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", pipe.scheduler_config.get("_class_name", "LMSDiscreteScheduler")],
    }
    if pipe.is_xl:
        return {"_class_name": "StableDiffusionXLPipeline", **common,
                "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                "tokenizer_2": ["transformers", "CLIPTokenizer"],
                "force_zeros_for_empty_prompt": pipe.force_zeros_for_empty_prompt}
    return {
        "_class_name": "StableDiffusionPipeline", **common,
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
