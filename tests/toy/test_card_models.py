"""The concept study's toy-model recipes on tiny settings: what they write loads in the reference formats."""
import numpy as np
import pytest

from configs.toy import clip as clip_config
from configs.toy import mobilenet_v2 as mobilenet_config
from jaxprobe.concepts import sweep
from jaxprobe.models import load_clip, load_mobilenet_v2
from jaxprobe.toy import card_models, recipes

pytestmark = pytest.mark.slow  # each trains (briefly) and compiles a model: ~1 min on 2 cores


def test_mobilenet_recipe_writes_checkpoints_from_the_initialisation(tmp_path):
    c = mobilenet_config.get_config()
    c.num_train, c.num_test, c.batch_size, c.epochs, c.early_checkpoints = 128, 64, 32, 2, 1
    c.warmup_steps, c.bn_images, c.export_dir = 2, 64, ""
    recipes.train(c, tmp_path)
    steps = [s for s, _ in sweep.find_checkpoints(tmp_path / "checkpoints_torchvision")]
    assert steps == card_models.checkpoint_steps(c, 4) == [0, 2, 4, 8]
    module, first = load_mobilenet_v2(tmp_path / "checkpoints_torchvision" / "step_000000.safetensors")
    _, last = load_mobilenet_v2(tmp_path / "checkpoints_torchvision" / "step_000008.safetensors")
    assert module.config.width_mult == 0.5 and module.config.num_classes == 16
    assert not np.allclose(first["params"]["classifier_1"]["kernel"], last["params"]["classifier_1"]["kernel"])
    # precise BN: every checkpoint has its own statistics, not the init's (0, 1)
    assert not np.allclose(first["batch_stats"]["features_0"]["layers_1"]["var"], 1.0)


def test_clip_recipe_writes_a_transformers_clip_with_its_tokenizer(tmp_path):
    import transformers
    c = clip_config.get_config()
    c.num_train, c.num_test, c.batch_size, c.num_steps, c.warmup_steps, c.export_dir = 256, 64, 32, 4, 1, ""
    recipes.train(c, tmp_path)
    module, params = load_clip(tmp_path / "clip")
    ref, info = transformers.CLIPModel.from_pretrained(tmp_path / "clip", output_loading_info=True)
    assert not any(info.values()), info
    tok = transformers.CLIPTokenizer.from_pretrained(tmp_path / "clip")
    ids = tok(["This image has a concept: dotted"])["input_ids"][0]
    assert tok.unk_token_id not in ids[1:-1]  # every word of the template is in the vocabulary
