"""The scene study's layer names: UNet/VAE block paths -> short names and resolution levels (its report namer)."""
from jaxprobe.scene import layers

# The paper's 16 probe sites in SD v1 (diffusers order): 2+2+2 down, 1 mid, 3+3+3 up.
SD_LAYERS = tuple(
    [f"down_blocks_{i}/attentions_{j}/transformer_blocks_0/attn1/to_out_0" for i in range(3) for j in range(2)]
    + ["mid_block/attentions_0/transformer_blocks_0/attn1/to_out_0"]
    + [f"up_blocks_{i}/attentions_{j}/transformer_blocks_0/attn1/to_out_0" for i in (1, 2, 3) for j in range(3)])
VAE_LAYER = "decoder/mid_block/attentions_0"


def test_short_layer_names_of_the_16_sd_layers():
    names = [layers.short_layer_name(l) for l in SD_LAYERS]
    assert len(set(names)) == 16
    assert names[0] == "down0.a0" and names[6] == "mid" and names[-1] == "up3.a2" and names[7] == "up1.a0"
    assert all(len(n) <= 8 for n in names)
    # diffusers' dotted names give the same labels; the VAE's mid attention and a non-default site are distinct.
    dotted = "up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_out.0"
    assert layers.short_layer_name(dotted) == "up3.a2"
    assert layers.short_layer_name(VAE_LAYER) == "dec.mid"
    assert layers.short_layer_name("up_blocks_1/attentions_0/transformer_blocks_0/attn2/to_out_0") == "up1.a0.attn2"
    assert layers.short_layer_name("features_3") == "features_3"  # no UNet/VAE block: as is


def test_resolution_levels_follow_the_unet():
    # SD v1 at 512^2: down0/up3 64x64 (level 0), down1/up2 32x32, down2/up1 16x16, mid 8x8 (level 3).
    levels = layers.resolution_levels(SD_LAYERS + (VAE_LAYER,))
    by_short = {layers.short_layer_name(l): v for l, v in levels.items()}
    assert by_short["down0.a1"] == by_short["up3.a0"] == 0
    assert by_short["down1.a0"] == by_short["up2.a2"] == 1
    assert by_short["down2.a1"] == by_short["up1.a1"] == 2
    assert by_short["mid"] == 3
    assert by_short["dec.mid"] is None


def test_the_namer_names_the_blocks_it_knows_only():
    names = layers.names(SD_LAYERS + (VAE_LAYER, "features_3"))
    assert names[SD_LAYERS[6]] == ("mid", 3) and names[VAE_LAYER] == ("dec.mid", None)
    assert "features_3" not in names  # the report shows it by its path
