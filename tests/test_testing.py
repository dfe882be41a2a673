"""jaxprobe.testing.tiny_pipeline: samples finite images, loads in diffusers with the same outputs, seeded."""
import jax
import numpy as np
import pytest

from jaxprobe.testing import TEXT_ENCODER_CONFIG, tiny_pipeline

try:
    from jaxprobe.diffusion import sampling
except ImportError:  # before the package reorganisation
    from jaxprobe import sampling

PROMPTS = ["a red ball", "cube"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny") / "sd"
    return directory, tiny_pipeline(directory, seed=0)


def _flat(pipe):
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(pipe.params)])


def test_samples_finite_images_that_depend_on_the_prompt(tiny):
    pipe = tiny[1]
    assert len(pipe.tokenizer) == TEXT_ENCODER_CONFIG["vocab_size"]
    out = sampling.sample(pipe, PROMPTS, num_inference_steps=3)
    assert out.images.shape == (2, 16, 16, 3) and out.images.dtype == np.uint8
    assert np.isfinite(np.asarray(out.latents)).all()
    assert np.abs(out.images[0].astype(int) - out.images[1]).max() > 10


def test_diffusers_loads_the_directory_and_samples_the_same(tiny):
    import diffusers
    import torch
    directory, pipe = tiny
    torch_pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(directory))
    noise = sampling.initial_noise([3, 4], (8, 8, 4))
    ours = sampling.sample(pipe, PROMPTS, num_inference_steps=3, latents=noise)
    final = {}

    def keep_latents(p, i, t, kwargs):
        final["latents"] = kwargs["latents"]
        return {}

    ref = torch_pipe(PROMPTS, num_inference_steps=3, output_type="np", callback_on_step_end=keep_latents,
                     latents=torch.from_numpy(np.asarray(noise).transpose(0, 3, 1, 2).copy())).images
    latents = np.asarray(ours.latents)
    np.testing.assert_allclose(latents, final["latents"].numpy().transpose(0, 2, 3, 1),
                               atol=2e-5 * np.abs(latents).max(), rtol=0)
    assert np.abs(ours.images.astype(int) - np.round(ref * 255).astype(int)).max() <= 1


def test_same_seed_same_params_other_seed_other_params(tiny):
    same, other = tiny_pipeline(seed=0), tiny_pipeline(seed=1)
    np.testing.assert_array_equal(_flat(same), _flat(tiny[1]))
    assert not np.allclose(_flat(other), _flat(tiny[1]))
