"""The concept study's shipped toy models, trained on the toy concept cards: the probed MobileNetV2 (checkpoints
along its training) and a tiny CLIP that labels concepts as the paper's CLIP does.

MobileNetV2 learns the 16-way shape x pattern task, so colour is irrelevant to it: colour should be decodable
early in the network at every checkpoint (it is in the pixels) and pattern late, and only after training.
Checkpoints are torchvision state dicts (safetensors, float16 to ship small) written at step 0 (the
initialisation), at log-spaced early steps and at every epoch end. Batch-norm statistics of a checkpoint are
"precise BN": the batch statistics of one large pass over training images in train mode, not a running average.

The tiny CLIP learns card captions contrastively. Besides plain descriptions ("a red dotted star") it sees the
probe template itself with one of the card's concepts ("this image has a concept: dotted"; "none" for a grey or a
plain card), so the paper's prompts and its "none" concept mean something to it.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprobe import io
from jaxprobe import train as training
from jaxprobe.models import clip, load, load_mobilenet_v2, mobilenet_v2, save_mobilenet_v2, tokenizer
from jaxprobe.models.pipeline import load_tokenizer, tokenize
from jaxprobe.toy import data
from jaxprobe.toy.cards import render

NONE_WORDS = {"color": "grey", "pattern": "plain"}  # how a plain description names a "none" concept
DESCRIPTION_WORDS = ("a", *NONE_WORDS.values())


# --------------------------------------------------------------------------------------------- MobileNetV2
def checkpoint_steps(c, steps_per_epoch: int) -> list[int]:
    """0, `c.early_checkpoints` log-spaced steps within the first epoch, and every epoch end."""
    early = np.geomspace(1, steps_per_epoch, c.early_checkpoints + 2)[1:-1]
    ends = [e * steps_per_epoch for e in range(1, c.epochs + 1)]
    return sorted({0, *map(int, np.round(early)), *ends})


def precise_batch_stats(module, params, images: np.ndarray) -> dict:
    """Batch-norm statistics of one train-mode pass over `images`: starting the running averages at zero, one
    update leaves (1 - momentum) x the batch statistics, which is divided out."""
    zeros = jax.tree.map(jnp.zeros_like, module.init(jax.random.key(0), *module.dummy_inputs())["batch_stats"])
    _, state = jax.jit(lambda p, x: module.apply({"params": p, "batch_stats": zeros}, x, train=True,
                                                 mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)}))(
        params, mobilenet_v2.preprocess(jnp.asarray(images)))
    return jax.tree.map(lambda v: v / (1.0 - mobilenet_v2.BN_MOMENTUM), state["batch_stats"])


def mobilenet_accuracy(module, variables, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    fn = jax.jit(lambda v, x: jnp.argmax(module.apply(v, mobilenet_v2.preprocess(x), train=False), -1))
    pred = data.map_batches(lambda b: fn(variables, b), images, batch_size)
    return float(np.mean(pred == labels))


def train_mobilenet(c, workdir) -> list[str]:
    """Train on the cards and export every checkpoint to `workdir/checkpoints_torchvision/step_*.safetensors`."""
    workdir = Path(workdir)
    train = render.render_cards(range(c.num_train), c.resolution)
    test = render.render_cards(range(render.TEST_SEED_OFFSET, render.TEST_SEED_OFFSET + c.num_test), c.resolution)
    module = mobilenet_v2.MobileNetV2(mobilenet_v2.MobileNetV2Config(num_classes=render.NUM_CLASSES,
                                                                    width_mult=c.width_mult, dropout=c.dropout))
    params = module.init(jax.random.key(c.seed), *module.dummy_inputs())["params"]
    steps_per_epoch = c.num_train // c.batch_size
    num_steps = c.epochs * steps_per_epoch
    export = checkpoint_steps(c, steps_per_epoch)
    out = workdir / "checkpoints_torchvision"
    stats_images = train["rgb"][:c.bn_images]

    def save(step, p):
        path = out / f"step_{step:06d}.safetensors"
        if not path.exists():
            variables = {"params": p, "batch_stats": precise_batch_stats(module, p, stats_images)}
            save_mobilenet_v2(path, module, variables, dtype=np.float16)
            print(f"step {step}: checkpoint written, test accuracy "
                  f"{mobilenet_accuracy(module, variables, test['rgb'], test['label']):.4f}")

    out.mkdir(parents=True, exist_ok=True)
    save(0, params)
    zeros = module.init(jax.random.key(0), *module.dummy_inputs())["batch_stats"]

    def loss_fn(p, batch, key):
        x, y = batch
        logits, _ = module.apply({"params": p, "batch_stats": zeros}, mobilenet_v2.preprocess(x), train=True,
                                 mutable=["batch_stats"], rngs={"dropout": key})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}

    def batch_fn(s):
        idx = data.batch_indices(s, c.num_train, c.batch_size, c.seed)
        return train["rgb"][idx], train["label"][idx]

    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, c.lr, c.warmup_steps, num_steps),
                      weight_decay=c.weight_decay)
    training.fit(workdir=workdir, params=params, loss_fn=loss_fn, batch_fn=batch_fn, optimizer=opt,
                 num_steps=num_steps, seed=c.seed, checkpoint_every=c.checkpoint_every, eval_every=1,
                 eval_fn=lambda st: int(st.step) in export and save(int(st.step), jax.device_get(st.params)),
                 desc="toy MobileNetV2")
    by_step = {step: mobilenet_accuracy(*load_mobilenet_v2(out / f"step_{step:06d}.safetensors"), test["rgb"],
                                        test["label"]) for step in export}  # from the files: a resumed run too
    last, final = out / f"step_{num_steps:06d}.safetensors", by_step[num_steps]
    io.write_json(workdir / "metrics.json", {"test_accuracy": final, "num_test": c.num_test,
                                             "checkpoint_steps": export,
                                             "test_accuracy_by_step": {str(k): v for k, v in by_step.items()}})
    if c.export_dir:
        with io.atomic_dir(c.export_dir) as tmp:
            for f in [*out.glob("step_*.safetensors"), workdir / "metrics.json"]:
                shutil.copy(f, tmp / f.name)
    where = f"{out} and {c.export_dir}" if c.export_dir else str(out)
    return [f"{len(export)} checkpoints written to {where}; last ({last.name}) test accuracy {final:.4f} on "
            f"{c.num_test} held-out cards"]


# ---------------------------------------------------------------------------------------------------- CLIP
def vocabulary(template: str) -> list[str]:
    """Every word of the captions; the template split as CLIP's tokenizer splits it ("concept:" -> "concept", ":")."""
    words = re.findall(r"\w+|[^\w\s]+", template.replace("{}", " ").lower())
    return sorted({*DESCRIPTION_WORDS, *words, *(w for ws in render.GROUPS.values() for w in ws)})


def captions(cards: dict, template: str, rng: np.random.Generator) -> list[str]:
    """One random caption per card: the probe template with one of the card's concepts, or a description."""
    out = []
    for shape, color, pattern in zip(cards["shape"], cards["color"], cards["pattern"]):
        col = NONE_WORDS["color"] if color == "none" else color
        pat = NONE_WORDS["pattern"] if pattern == "none" else pattern
        out.append([template.format([color, pattern, shape][rng.integers(3)]), f"a {col} {pat} {shape}",
                    f"a {col} {shape}", f"a {pat} {shape}"][rng.integers(4)])
    return out


def zero_shot_accuracy(module, params, tok, images: np.ndarray, truth: dict, template: str) -> dict[str, float]:
    """Per concept group: how often the template prompt with the highest similarity names the card's concept."""
    logits = clip.zero_shot_logits(module, params, lambda texts: tokenize(tok, texts), images,
                                   {g: [template.format(w) for w in words] for g, words in render.GROUPS.items()},
                                   batch_size=500)
    return {g: float(np.mean(np.asarray(words)[logits[g].argmax(1)] == truth[g]))
            for g, words in render.GROUPS.items()}


def clip_loss_fn(module):
    """Symmetric InfoNCE with soft targets: captions that are equal in a batch are all positives of each other."""
    def loss_fn(p, batch, key):
        del key
        pixels, ids, caption_id = batch
        img = module.apply({"params": p}, clip.preprocess(pixels, module.config.vision_config.image_size),
                           method="get_image_features")
        txt = module.apply({"params": p}, ids, method="get_text_features")
        img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
        txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
        logits = jnp.exp(p["logit_scale"]) * img @ txt.T
        same = (caption_id[:, None] == caption_id[None]).astype(jnp.float32)
        target = same / same.sum(1, keepdims=True)
        loss = 0.5 * (optax.softmax_cross_entropy(logits, target).mean()
                      + optax.softmax_cross_entropy(logits.T, target).mean())
        return loss, {"logit_scale": jnp.exp(p["logit_scale"])}
    return loss_fn


def train_clip(c, workdir) -> list[str]:
    """Train the tiny CLIP on card captions; export a transformers CLIPModel directory (with its tokenizer)."""
    workdir = Path(workdir)
    tok_dir = workdir / "tokenizer"
    vocab_size = tokenizer.build_word_tokenizer(vocabulary(c.template), tok_dir, max_length=c.max_length)
    tok = load_tokenizer(tok_dir)
    cfg = clip.CLIPConfig.from_dict(dict(
        projection_dim=c.projection_dim,
        text_config=dict(vocab_size=vocab_size, hidden_size=c.width, intermediate_size=2 * c.width,
                         num_hidden_layers=c.text_layers, num_attention_heads=c.heads, projection_dim=c.projection_dim,
                         max_position_embeddings=c.max_length, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=c.width, intermediate_size=2 * c.width, num_hidden_layers=c.vision_layers,
                           num_attention_heads=c.heads, image_size=c.image_size, patch_size=c.patch_size,
                           projection_dim=c.projection_dim)))
    module = clip.CLIPModel(cfg)
    params = module.init(jax.random.key(c.seed), *module.dummy_inputs())["params"]
    train = render.render_cards(range(c.num_train), c.resolution)
    test = render.render_cards(range(render.TEST_SEED_OFFSET, render.TEST_SEED_OFFSET + c.num_test), c.resolution)

    def batch_fn(s):
        idx = data.batch_indices(s, c.num_train, c.batch_size, c.seed)
        texts = captions({k: train[k][idx] for k in ("shape", "color", "pattern")}, c.template,
                         np.random.default_rng([c.seed, s]))
        _, caption_id = np.unique(texts, return_inverse=True)
        return train["rgb"][idx], tokenize(tok, texts), caption_id.astype(np.int32)

    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, c.lr, c.warmup_steps, c.num_steps),
                      weight_decay=c.weight_decay)
    state, _ = training.fit(workdir=workdir, params=params, loss_fn=clip_loss_fn(module), batch_fn=batch_fn,
                            optimizer=opt, num_steps=c.num_steps, seed=c.seed, checkpoint_every=c.checkpoint_every,
                            desc="toy CLIP")
    params = jax.device_get(state.params)
    acc = zero_shot_accuracy(module, params, tok, test["rgb"], test, c.template)
    outs = [workdir / "clip"] + ([Path(c.export_dir)] if c.export_dir else [])
    for out in outs:
        with io.atomic_dir(out) as tmp:  # the model, its tokenizer and its metrics appear together
            load.write_component(tmp, module, params, weights_name=load.TRANSFORMERS_WEIGHTS)
            tok.save_pretrained(str(tmp))
            io.write_json(tmp / "metrics.json", {"zero_shot_accuracy": acc, "num_test": c.num_test,
                                                 "template": c.template})
    return [f"toy CLIP written to {out}" for out in outs] + [
        f"zero-shot accuracy on {c.num_test} held-out cards (template {c.template!r}): "
        + ", ".join(f"{g} {a:.3f}" for g, a in acc.items())]
