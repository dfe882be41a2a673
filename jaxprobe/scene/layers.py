"""How the scene study's layers are called on figures: UNet and VAE block paths (Flax or diffusers' dotted form)
parsed into short names ('up3.a2', 'mid', 'dec.mid') and UNet resolution levels; `names` is the study's
`report.LayerNamer`."""
from __future__ import annotations

import re
from typing import Sequence

_BLOCK = re.compile(r"^(?:(?P<part>encoder|decoder)/)?(?:(?P<kind>down|up)_blocks_(?P<i>\d+)|(?P<mid>mid_block))"
                    r"(?:/(?P<sub>attentions|resnets)_(?P<j>\d+))?"
                    r"(?:/transformer_blocks_(?P<t>\d+))?(?:/(?P<rest>.*))?$")


def _match_block(path: str) -> re.Match | None:
    """Parse a UNet/VAE block path; diffusers' dotted form ('up_blocks.3.attentions.2...') is read as Flax's."""
    return _BLOCK.match(re.sub(r"\.(\d+)(?=\.|$)", r"_\1", path).replace(".", "/"))


def short_layer_name(path: str) -> str:
    """A tick-label-sized name for a Flax/diffusers module path ('/' or '.' separated).

    'down_blocks_0/attentions_1/transformer_blocks_0/attn1/to_out_0' -> 'down0.a1', 'mid_block/attentions_0/...'
    -> 'mid', 'up_blocks_3/attentions_2/...' -> 'up3.a2', 'decoder/mid_block/attentions_0' -> 'dec.mid'. The
    paper's probe site (transformer block 0, attn1/to_out_0) is implied; any other one is appended
    ('down0.a0.t1', 'up1.a0.attn2'), so distinct paths stay distinct. Paths of no UNet/VAE block come back as is.
    """
    m = _match_block(path)
    if m is None:
        return path
    name = {"encoder": "enc.", "decoder": "dec."}.get(m["part"], "")
    name += "mid" if m["mid"] else f"{m['kind']}{m['i']}"
    if m["sub"] and not (m["mid"] and m["j"] == "0" and m["sub"] == "attentions"):
        name += f".{m['sub'][0]}{m['j']}"
    if m["t"] and m["t"] != "0":
        name += f".t{m['t']}"
    rest = m["rest"] or ""
    if rest and rest not in ("attn1/to_out_0", "attn1"):
        name += "." + rest.split("/")[0]
    return name


def resolution_levels(layers: Sequence[str]) -> dict[str, int | None]:
    """UNet resolution level of each layer: 0 = full latent resolution, growing by one per 2x downsampling.

    down_blocks_i sits at level i, the mid block at the bottleneck, up_blocks_i at level (U - 1 - i) with U the
    number of up blocks (the highest up index in `layers` + 1), as in diffusers' UNet2DConditionModel. For SD v1
    attn1 layers: down0/up3 -> 0 (64x64), down1/up2 -> 1, down2/up1 -> 2, mid -> 3 (8x8). Layers of no UNet
    block (e.g. the VAE decoder's) -> None.
    """
    parsed = {l: _match_block(l) for l in layers}
    unet = {l: m for l, m in parsed.items() if m is not None and m["part"] is None}
    ups = [int(m["i"]) for m in unet.values() if m["kind"] == "up"]
    downs = [int(m["i"]) for m in unet.values() if m["kind"] == "down"]
    n_up = max(ups) + 1 if ups else 0
    bottleneck = max([n_up - 1] + [d + 1 for d in downs])
    out = {}
    for l in layers:
        m = unet.get(l)
        out[l] = (None if m is None else bottleneck if m["mid"] else
                  int(m["i"]) if m["kind"] == "down" else n_up - 1 - int(m["i"]))
    return out


def groups(layers: Sequence[str]) -> dict[str, str]:
    """The report's layer grouper: {path: the short name of its block's transformer ('down2.a1' for each of
    SDXL's 'down2.a1.t0' .. 'down2.a1.t9')} for the UNet/VAE block paths among `layers`."""
    return {l: re.sub(r"\.t\d+", "", short_layer_name(l), count=1) for l in layers if _match_block(l)}


def names(layers: Sequence[str]) -> dict[str, tuple[str, int | None]]:
    """The report's layer namer: {path: (short name, level)} for the UNet/VAE block paths among `layers`."""
    levels = resolution_levels(layers)
    return {l: (short_layer_name(l), levels[l]) for l in layers if _match_block(l)}
