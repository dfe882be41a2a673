"""CLIP in Flax linen, equal to transformers' `CLIPTextModel` (the Stable Diffusion v1 text encoder),
`CLIPTextModelWithProjection` (SDXL's second text encoder), its vision tower and the two-tower `CLIPModel`
(image/text features and the contrastive logits).

Parameter paths mirror the transformers 5 state dict, where `CLIPTextModel` holds `embeddings`, `encoder.layers.N`
and `final_layer_norm` directly (`encoder/layers_0/self_attn/q_proj/kernel` <-> `encoder.layers.0.self_attn.q_proj
.weight`), and `CLIPModel` nests the same tree under `text_model`, the vision tower under `vision_model`
(`vision_model/embeddings/patch_embedding/kernel`, `vision_model/pre_layrnorm/scale`, ...) next to
`visual_projection/kernel`, `text_projection/kernel` and the scalar `logit_scale`; `CLIPTextModelWithProjection`
nests it under `text_model` beside `text_projection/kernel`. Checkpoints written by
transformers 4 (SD v1-4's `text_encoder/` among them) carry an extra `text_model.` prefix on every text-encoder key.

Images are NHWC float arrays [B, image_size, image_size, num_channels], already resized and normalised by the caller:
CLIP's processors map RGB in [0, 1] to `(x - CLIP_MEAN) / CLIP_STD` per channel.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprobe.models.config import Config
from jaxprobe.validate import check_supported

# transformers' ACT2FN entries for the activations CLIP checkpoints use ("gelu" is the exact, erf-based GELU).
ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
}
# Per-channel RGB mean and std of CLIP's image preprocessing (`CLIPImageProcessor`'s OPENAI_CLIP_MEAN / _STD), for
# pixels scaled to [0, 1]: pixel_values = (rgb - CLIP_MEAN) / CLIP_STD.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# transformers 5 pools at argmax(input_ids) when eos_token_id == 2 (configs written before transformers PR #24773),
# otherwise at the first eos_token_id.
LEGACY_EOS_TOKEN_ID = 2


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig(Config):
    """transformers `CLIPTextConfig` fields (same names and defaults) that change the forward pass or the init."""

    EXPORT: ClassVar[dict] = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model"}
    SUPPORTED: ClassVar[dict] = {"hidden_act": tuple(ACTIVATIONS)}

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    initializer_factor: float = 1.0
    pad_token_id: int = 1
    bos_token_id: int = 49406
    eos_token_id: int = 49407

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"CLIPTextConfig: hidden_size={self.hidden_size} is not a multiple of "
                             f"num_attention_heads={self.num_attention_heads}")


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig(Config):
    """transformers `CLIPVisionConfig` fields (same names and defaults) that change the forward pass or the init.

    Square images only: `image_size` and `patch_size` are ints (as transformers' CLIPVisionEmbeddings needs them).
    """

    EXPORT: ClassVar[dict] = {"architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model"}
    SUPPORTED: ClassVar[dict] = {"hidden_act": tuple(ACTIVATIONS)}

    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    initializer_factor: float = 1.0

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"CLIPVisionConfig: hidden_size={self.hidden_size} is not a multiple of "
                             f"num_attention_heads={self.num_attention_heads}")
        for name in ("image_size", "patch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"CLIPVisionConfig: {name}={getattr(self, name)!r} is not supported; "
                                 "only a positive int (square images and patches)")
        if self.patch_size > self.image_size:
            raise ValueError(f"CLIPVisionConfig: patch_size={self.patch_size} > image_size={self.image_size}")

    @property
    def num_positions(self) -> int:
        """Sequence length of the vision tower: the (image_size // patch_size)**2 patches plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclasses.dataclass(frozen=True)
class CLIPTextWithProjectionConfig(CLIPTextConfig):
    """The config of transformers' `CLIPTextModelWithProjection`: a `CLIPTextConfig` written under that class."""

    EXPORT: ClassVar[dict] = {"architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model"}


def _sub_config(cls, value, owner: str):
    """A sub-config from None (all defaults), a config.json dict (None values fall back to defaults) or an instance."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls.from_dict({k: v for k, v in value.items() if v is not None})
    raise TypeError(f"{owner}: expected a {cls.__name__} or a dict, got {type(value).__name__}")


@dataclasses.dataclass(frozen=True)
class CLIPConfig(Config):
    """transformers `CLIPConfig`: the two towers' configs, the shared projection width and the logit scale's init.

    `text_config` / `vision_config` may be given as dicts (config.json), None or absent (transformers' defaults).
    `from_dict` reads real CLIPModel config.json files, whatever extra keys they carry, including old ones whose
    towers sit in `text_config_dict` / `vision_config_dict`; as in transformers, a non-null `*_config_dict` replaces
    the matching `*_config`.
    """

    EXPORT: ClassVar[dict] = {"architectures": ["CLIPModel"], "model_type": "clip"}

    text_config: CLIPTextConfig = dataclasses.field(default_factory=CLIPTextConfig)
    vision_config: CLIPVisionConfig = dataclasses.field(default_factory=CLIPVisionConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    initializer_factor: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "text_config", _sub_config(CLIPTextConfig, self.text_config, "CLIPConfig"))
        object.__setattr__(self, "vision_config", _sub_config(CLIPVisionConfig, self.vision_config, "CLIPConfig"))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]):
        config = {k: v for k, v in config.items() if v is not None}
        for name in ("text_config", "vision_config"):
            if f"{name}_dict" in config:
                config[name] = config[f"{name}_dict"]
        return super().from_dict(config)

    def to_dict(self) -> dict:
        """config.json of a transformers CLIPModel: top-level fields, and each tower's fields under its model_type."""
        out = dict(self.EXPORT)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Config):
                value = {k: v for k, v in value.to_dict().items() if k != "architectures"}
            out[field.name] = value
        return out


def _activation(name: str, owner: str = "CLIPTextConfig"):
    check_supported(f"{owner}: hidden_act", name, ACTIVATIONS)
    return ACTIVATIONS[name]


def _dense(features: int, std: float, dtype) -> nn.Dense:
    """Linear layer with transformers' CLIP init (normal(std) weight, zero bias); params float32, compute `dtype`."""
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, kernel_init=nn.initializers.normal(std))


def _layer_norm(config: CLIPTextConfig | CLIPVisionConfig, dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=dtype, param_dtype=jnp.float32)


class CLIPTextEmbeddings(nn.Module):
    """Token + learned absolute position embeddings: int ids [B, T] -> [B, T, hidden], T <= max_position_embeddings."""

    config: CLIPTextConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        init = nn.initializers.normal(0.02 * c.initializer_factor)
        self.token_embedding = nn.Embed(c.vocab_size, c.hidden_size, dtype=self.dtype, param_dtype=jnp.float32,
                                        embedding_init=init)
        self.position_embedding = nn.Embed(c.max_position_embeddings, c.hidden_size, dtype=self.dtype,
                                           param_dtype=jnp.float32, embedding_init=init)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        length = input_ids.shape[-1]
        if length > self.config.max_position_embeddings:
            raise ValueError(f"input_ids has {length} tokens, more than max_position_embeddings="
                             f"{self.config.max_position_embeddings}")
        return self.token_embedding(input_ids) + self.position_embedding(jnp.arange(length))[None]


class CLIPAttention(nn.Module):
    """Multi-head self-attention, causal (text tower) or not (vision tower): [B, T, hidden] -> [B, T, hidden]."""

    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = jnp.float32
    causal: bool = True

    def setup(self):
        c = self.config
        width, factor = c.hidden_size, c.initializer_factor
        in_std = width ** -0.5 * (2 * c.num_hidden_layers) ** -0.5 * factor
        self.q_proj = _dense(width, in_std, self.dtype)
        self.k_proj = _dense(width, in_std, self.dtype)
        self.v_proj = _dense(width, in_std, self.dtype)
        self.out_proj = _dense(width, width ** -0.5 * factor, self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, length, width = x.shape
        heads = self.config.num_attention_heads

        def split(y):  # [B, T, hidden] -> [B, T, heads, head_dim]
            return y.reshape(batch, length, heads, width // heads)

        out = jax.nn.dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                           is_causal=self.causal)
        return self.out_proj(out.reshape(batch, length, width))


class CLIPMLP(nn.Module):
    """fc1 -> activation -> fc2: [B, T, hidden] -> [B, T, hidden]."""

    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.act = _activation(c.hidden_act, type(c).__name__)
        self.fc1 = _dense(c.intermediate_size, (2 * c.hidden_size) ** -0.5 * c.initializer_factor, self.dtype)
        self.fc2 = _dense(c.hidden_size, c.hidden_size ** -0.5 * (2 * c.num_hidden_layers) ** -0.5
                          * c.initializer_factor, self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)); [B, T, hidden] -> [B, T, hidden].

    `causal` selects the text tower's causal attention (default) or the vision tower's full attention.
    """

    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = jnp.float32
    causal: bool = True

    def setup(self):
        self.self_attn = CLIPAttention(self.config, self.dtype, self.causal)
        self.layer_norm1 = _layer_norm(self.config, self.dtype)
        self.mlp = CLIPMLP(self.config, self.dtype)
        self.layer_norm2 = _layer_norm(self.config, self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    """`num_hidden_layers` encoder layers, named `layers_0` ... as transformers' `encoder.layers.0` ...; `causal`
    as in `CLIPEncoderLayer`."""

    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = jnp.float32
    causal: bool = True

    def setup(self):
        self.layers = [CLIPEncoderLayer(self.config, self.dtype, self.causal)
                       for _ in range(self.config.num_hidden_layers)]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.hidden_states(x)[-1]

    def hidden_states(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """The input and every layer's output (transformers' `hidden_states`), num_hidden_layers + 1 of them."""
        out = (x,)
        for layer in self.layers:
            out += (layer(out[-1]),)
        return out


class CLIPTextModel(nn.Module):
    """transformers `CLIPTextModel`: int ids [B, T] -> last_hidden_state [B, T, hidden] (after final_layer_norm).

    No attention mask, as Stable Diffusion calls it: padding tokens are attended to, causally. `dtype` is the
    compute dtype; params are always float32, so `module.clone(dtype=jnp.bfloat16)` runs the same params in bf16.
    """

    config: CLIPTextConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.embeddings = CLIPTextEmbeddings(self.config, self.dtype)
        self.encoder = CLIPEncoder(self.config, self.dtype)
        self.final_layer_norm = _layer_norm(self.config, self.dtype)

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        return self.final_layer_norm(self.encoder(self.embeddings(input_ids)))

    def hidden_states(self, input_ids: jax.Array) -> tuple[jax.Array, ...]:
        """transformers' `hidden_states` (output_hidden_states=True): the embeddings' output and every layer's,
        each [B, T, hidden], without final_layer_norm; SDXL conditions on `[-2]`."""
        return self.encoder.hidden_states(self.embeddings(input_ids))

    def pooled(self, input_ids: jax.Array) -> jax.Array:
        """transformers' `pooler_output` [B, hidden]: the last_hidden_state row of each sequence's EOS token."""
        return self.pool(input_ids, self(input_ids))

    def pool(self, input_ids: jax.Array, hidden: jax.Array) -> jax.Array:
        """The row of `hidden` [B, T, hidden] at each sequence's EOS token -> [B, hidden]."""
        if self.config.eos_token_id == LEGACY_EOS_TOKEN_ID:
            position = jnp.argmax(input_ids, axis=-1)
        else:
            position = jnp.argmax(input_ids == self.config.eos_token_id, axis=-1)
        return jnp.take_along_axis(hidden, position[:, None, None], axis=1)[:, 0]

    def dummy_inputs(self) -> tuple:
        """Arguments for `init`: one full-length sequence of ids, int32 [1, max_position_embeddings]."""
        return (jnp.zeros((1, self.config.max_position_embeddings), jnp.int32),)


class CLIPTextModelWithProjection(nn.Module):
    """transformers `CLIPTextModelWithProjection` (SDXL's `text_encoder_2`): int ids [B, T] -> text_embeds
    [B, projection_dim], the pooled output through `text_projection` (no bias). Params and dtype as
    `CLIPTextModel`."""

    config: CLIPTextConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.text_model = CLIPTextModel(c, self.dtype)
        self.text_projection = nn.Dense(c.projection_dim, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                                        kernel_init=nn.initializers.normal(c.hidden_size ** -0.5
                                                                           * c.initializer_factor))

    def __call__(self, input_ids: jax.Array) -> jax.Array:
        return self.embeds_and_hidden_states(input_ids)[0]

    def embeds_and_hidden_states(self, input_ids: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """(text_embeds [B, projection_dim], `CLIPTextModel.hidden_states`) from one pass of the encoder."""
        hidden = self.text_model.hidden_states(input_ids)
        pooled = self.text_model.pool(input_ids, self.text_model.final_layer_norm(hidden[-1]))
        return self.text_projection(pooled), hidden

    dummy_inputs = CLIPTextModel.dummy_inputs


def preprocess(images: jax.Array, size: int) -> jax.Array:
    """RGB images [B, H, W, 3] (integer 0..255, or float in [0, 1]) -> CLIP pixel_values float32 [B, size, size, 3]:
    resized to size x size (jax.image.resize "cubic", only when H, W differ from size) and normalised per channel
    with CLIP_MEAN / CLIP_STD. A plain square resize: not CLIPImageProcessor's shortest-side resize + centre crop."""
    x = jnp.asarray(images)
    x = x.astype(jnp.float32) / 255.0 if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(jnp.float32)
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), method="cubic")
    return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


class CLIPVisionEmbeddings(nn.Module):
    """Patch embedding (conv, no bias) + class token + learned positions.

    pixel_values float [B, image_size, image_size, num_channels] (NHWC) -> [B, num_positions, hidden], where
    num_positions = (image_size // patch_size)**2 + 1 and position 0 is the class token. Patches are ordered row by
    row, as transformers' `flatten(2)` of the NCHW conv output.
    """

    config: CLIPVisionConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        std = c.initializer_range * c.initializer_factor
        self.class_embedding = self.param("class_embedding",
                                          nn.initializers.normal(c.hidden_size ** -0.5 * c.initializer_factor),
                                          (c.hidden_size,), jnp.float32)
        self.patch_embedding = nn.Conv(c.hidden_size, (c.patch_size, c.patch_size), strides=(c.patch_size,) * 2,
                                       padding="VALID", use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                                       kernel_init=nn.initializers.normal(std))
        self.position_embedding = nn.Embed(c.num_positions, c.hidden_size, dtype=self.dtype, param_dtype=jnp.float32,
                                           embedding_init=nn.initializers.normal(std))

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        c = self.config
        want = (c.image_size, c.image_size, c.num_channels)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != want:
            raise ValueError(f"pixel_values must be NHWC [B, {', '.join(map(str, want))}] for this model; got shape "
                             f"{tuple(pixel_values.shape)}")
        batch = pixel_values.shape[0]
        patches = self.patch_embedding(pixel_values).reshape(batch, -1, c.hidden_size)
        cls = jnp.broadcast_to(self.class_embedding.astype(patches.dtype), (batch, 1, c.hidden_size))
        embeddings = jnp.concatenate([cls, patches], axis=1)
        return embeddings + self.position_embedding(jnp.arange(c.num_positions))[None]


class CLIPVisionTransformer(nn.Module):
    """transformers' CLIP vision tower (`CLIPVisionModel`, `CLIPModel.vision_model`): embeddings -> pre_layrnorm
    (transformers' spelling) -> encoder with full (non-causal) attention; post_layernorm on the class token.

    pixel_values float [B, image_size, image_size, num_channels] (NHWC, normalised with CLIP_MEAN / CLIP_STD) ->
    (last_hidden_state [B, num_positions, hidden] (no post_layernorm, as transformers), pooler_output [B, hidden]).
    `dtype` is the compute dtype; params are always float32.
    """

    config: CLIPVisionConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.embeddings = CLIPVisionEmbeddings(self.config, self.dtype)
        self.pre_layrnorm = _layer_norm(self.config, self.dtype)
        self.encoder = CLIPEncoder(self.config, self.dtype, causal=False)
        self.post_layernorm = _layer_norm(self.config, self.dtype)

    def __call__(self, pixel_values: jax.Array) -> tuple[jax.Array, jax.Array]:
        hidden = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return hidden, self.post_layernorm(hidden[:, 0])

    def pooled(self, pixel_values: jax.Array) -> jax.Array:
        """transformers' `pooler_output` [B, hidden]: post_layernorm of the class token's last hidden state."""
        return self(pixel_values)[1]

    def dummy_inputs(self) -> tuple:
        """Arguments for `init`: one zero image, float32 [1, image_size, image_size, num_channels]."""
        c = self.config
        return (jnp.zeros((1, c.image_size, c.image_size, c.num_channels), jnp.float32),)


class CLIPModel(nn.Module):
    """transformers `CLIPModel`: text and vision towers, their linear projections (no bias) and `logit_scale`.

    `get_text_features` / `get_image_features` return the projected pooled outputs *unnormalised*, as transformers 5
    does (its `get_*_features(...).pooler_output`); `__call__` L2-normalises them and returns `logits_per_image`
    [B_img, B_txt] = exp(logit_scale) * cosine similarity (`logits_per_text` is its transpose), computed in float32.
    No attention mask, as `CLIPTextModel`: pad tokens are attended to, causally, which changes nothing before the
    pooled EOS position. `dtype` is the compute dtype; params are always float32.
    """

    config: CLIPConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.text_model = CLIPTextModel(c.text_config, self.dtype)
        self.vision_model = CLIPVisionTransformer(c.vision_config, self.dtype)
        self.visual_projection = nn.Dense(
            c.projection_dim, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(c.vision_config.hidden_size ** -0.5 * c.initializer_factor))
        self.text_projection = nn.Dense(
            c.projection_dim, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(c.text_config.hidden_size ** -0.5 * c.initializer_factor))
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(c.logit_scale_init_value), (),
                                      jnp.float32)

    def get_image_features(self, pixel_values: jax.Array) -> jax.Array:
        """Image embeddings [B, projection_dim] (unnormalised) from NHWC pixel_values [B, S, S, C]."""
        return self.visual_projection(self.vision_model.pooled(pixel_values))

    def get_text_features(self, input_ids: jax.Array) -> jax.Array:
        """Text embeddings [B, projection_dim] (unnormalised): the projected EOS state, from int ids [B, T]."""
        return self.text_projection(self.text_model.pooled(input_ids))

    def __call__(self, input_ids: jax.Array, pixel_values: jax.Array) -> jax.Array:
        """logits_per_image float32 [B_img, B_txt] for int ids [B_txt, T] and NHWC pixel_values [B_img, S, S, C]."""
        image = self.get_image_features(pixel_values).astype(jnp.float32)
        text = self.get_text_features(input_ids).astype(jnp.float32)
        image = image / jnp.sqrt(jnp.sum(image ** 2, axis=-1, keepdims=True))
        text = text / jnp.sqrt(jnp.sum(text ** 2, axis=-1, keepdims=True))
        return jnp.exp(self.logit_scale) * image @ text.T

    def dummy_inputs(self) -> tuple:
        """Arguments for `init`: ids int32 [1, max_position_embeddings] and a zero image [1, S, S, C]."""
        t, v = self.config.text_config, self.config.vision_config
        return (jnp.zeros((1, t.max_position_embeddings), jnp.int32),
                jnp.zeros((1, v.image_size, v.image_size, v.num_channels), jnp.float32))


def zero_shot_logits(module: CLIPModel, params, tokenize: Callable[[list[str]], Any], images: np.ndarray,
                     prompts: Mapping[str, Sequence[str]], *, batch_size: int = 256) -> dict[str, np.ndarray]:
    """{group: float32 [N, len(prompts[group])]}: CLIP's zero-shot logits (logits_per_image, exp(logit_scale) x the
    cosine similarity) of every image (RGB [N, H, W, 3], through `preprocess`) with every prompt of each group. A
    softmax within a group gives the concept scores, an argmax within it the zero-shot label.

    `tokenize(list of str) -> int ids [P, T]` (e.g. `pipeline.tokenize` with a CLIPTokenizer); images are embedded
    `batch_size` at a time."""
    texts = [t for group in prompts.values() for t in group]
    text = _unit(module.apply({"params": params}, jnp.asarray(tokenize(texts)), method="get_text_features"))
    scale = jnp.exp(params["logit_scale"])
    size = module.config.vision_config.image_size
    embed = jax.jit(lambda x: _unit(module.apply({"params": params}, preprocess(x, size),
                                                 method="get_image_features")))
    logits = np.concatenate([np.asarray(scale * embed(jnp.asarray(images[i:i + batch_size])) @ text.T)
                             for i in range(0, len(images), batch_size)])
    out, start = {}, 0
    for group, texts in prompts.items():
        out[group] = logits[:, start:start + len(texts)]
        start += len(texts)
    return out


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)
