"""CLIP text encoder in Flax linen, equal to transformers' `CLIPTextModel` (the Stable Diffusion v1 text encoder).

Parameter paths mirror the transformers 5 state dict, where `CLIPTextModel` holds `embeddings`, `encoder.layers.N`
and `final_layer_norm` directly (`encoder/layers_0/self_attn/q_proj/kernel` <-> `encoder.layers.0.self_attn.q_proj
.weight`), and `CLIPModel` nests the same tree under `text_model`. Checkpoints written by transformers 4 (SD v1-4's
`text_encoder/` among them) carry an extra `text_model.` prefix on every key.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprobe.models.config import Config

# transformers' ACT2FN entries for the activations CLIP checkpoints use ("gelu" is the exact, erf-based GELU).
ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
}
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


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"CLIPTextConfig: hidden_act={name!r} is not supported; supported: "
                         f"{', '.join(map(repr, ACTIVATIONS))}")
    return ACTIVATIONS[name]


def _dense(features: int, std: float, dtype) -> nn.Dense:
    """Linear layer with transformers' CLIP init (normal(std) weight, zero bias); params float32, compute `dtype`."""
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, kernel_init=nn.initializers.normal(std))


def _layer_norm(config: CLIPTextConfig, dtype) -> nn.LayerNorm:
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
    """Causal multi-head self-attention: [B, T, hidden] -> [B, T, hidden]."""

    config: CLIPTextConfig
    dtype: Any = jnp.float32

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
                                           is_causal=True)
        return self.out_proj(out.reshape(batch, length, width))


class CLIPMLP(nn.Module):
    """fc1 -> activation -> fc2: [B, T, hidden] -> [B, T, hidden]."""

    config: CLIPTextConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.act = _activation(c.hidden_act)
        self.fc1 = _dense(c.intermediate_size, (2 * c.hidden_size) ** -0.5 * c.initializer_factor, self.dtype)
        self.fc2 = _dense(c.hidden_size, c.hidden_size ** -0.5 * (2 * c.num_hidden_layers) ** -0.5
                          * c.initializer_factor, self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)); [B, T, hidden] -> [B, T, hidden]."""

    config: CLIPTextConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.self_attn = CLIPAttention(self.config, self.dtype)
        self.layer_norm1 = _layer_norm(self.config, self.dtype)
        self.mlp = CLIPMLP(self.config, self.dtype)
        self.layer_norm2 = _layer_norm(self.config, self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    """`num_hidden_layers` encoder layers, named `layers_0` ... as transformers' `encoder.layers.0` ..."""

    config: CLIPTextConfig
    dtype: Any = jnp.float32

    def setup(self):
        self.layers = [CLIPEncoderLayer(self.config, self.dtype) for _ in range(self.config.num_hidden_layers)]

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x


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

    def pooled(self, input_ids: jax.Array) -> jax.Array:
        """transformers' `pooler_output` [B, hidden]: the last_hidden_state row of each sequence's EOS token."""
        hidden = self(input_ids)
        if self.config.eos_token_id == LEGACY_EOS_TOKEN_ID:
            position = jnp.argmax(input_ids, axis=-1)
        else:
            position = jnp.argmax(input_ids == self.config.eos_token_id, axis=-1)
        return jnp.take_along_axis(hidden, position[:, None, None], axis=1)[:, 0]

    def dummy_inputs(self) -> tuple:
        """Arguments for `init`: one full-length sequence of ids, int32 [1, max_position_embeddings]."""
        return (jnp.zeros((1, self.config.max_position_embeddings), jnp.int32),)
