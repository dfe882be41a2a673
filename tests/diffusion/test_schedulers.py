"""Schedulers against diffusers' PyTorch ones, step for step, with the whole loop as one lax.scan inside jit.

The schedulers are elementwise, so the tests use torch's NCHW layout on both sides. Model outputs are random (fixed
numpy seed). Closeness is relative to the reference's scale (LMS and Euler samples start at sigma_max ~ 14.6):
    max|ours - ref| / max(1, max|ref|) <= 1e-5, for every step and every returned array.
One exception, 3e-5: Euler with zero terminal SNR starts at sigma_max = 4096 and its first step goes to sigma 29, so
float32 rounding of the 4096-scale sample is amplified ~140x in both implementations (6e-8 * 140 ~ 8e-6); diffusers'
torch sqrt also rounds that sigma_max one float32 ulp away from the correctly rounded value numpy and XLA give.
"""
import functools
import json

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxprobe.diffusion import schedulers

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
TOL = 1e-5
SHAPE = (2, 4, 8, 8)
SD_V1 = {  # CompVis/stable-diffusion-v1-4 scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.7.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False,
}
DIFFUSERS_CLASS = {"lms": "LMSDiscreteScheduler", "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler"}
CASES = {
    "lms-sd_v1": ("lms", SD_V1),
    "lms-leading-v": ("lms", {"prediction_type": "v_prediction", "timestep_spacing": "leading", "steps_offset": 1}),
    "lms-trailing-trained_betas-sample": ("lms", {
        "trained_betas": list(np.linspace(1e-4, 0.025, 1000)), "timestep_spacing": "trailing",
        "prediction_type": "sample"}),
    "ddim-sd_v1": ("ddim", SD_V1),
    "ddim-trailing-zero_snr-v": ("ddim", {**SD_V1, "timestep_spacing": "trailing", "prediction_type": "v_prediction",
                                          "rescale_betas_zero_snr": True, "set_alpha_to_one": True}),
    "ddim-linspace-cosine-sample-clip": ("ddim", {
        "beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace", "prediction_type": "sample",
        "clip_sample_range": 1.5}),
    "euler-sd_v1": ("euler", SD_V1),
    "euler-leading": ("euler", {**SD_V1, "timestep_spacing": "leading"}),
    "euler-trailing-zero_snr-v": ("euler", {**SD_V1, "timestep_spacing": "trailing", "prediction_type": "v_prediction",
                                            "rescale_betas_zero_snr": True, "final_sigmas_type": "sigma_min"}),
}
CASE_TOL = {"euler-trailing-zero_snr-v": 3e-5}  # see the module docstring


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / max(1.0, np.abs(ref).max()))


def torch_scheduler(name, config):
    """diffusers' scheduler as a pipeline gets it: `Cls.from_config(pipe.scheduler.config)`."""
    loaded = getattr(diffusers, config.get("_class_name", DIFFUSERS_CLASS[name])).from_config(config)
    return getattr(diffusers, DIFFUSERS_CLASS[name]).from_config(loaded.config)


def torch_loop(sched, n, noise, outputs, start=0):
    """diffusers' denoising loop from step `start` (the noise is added to a clean sample when start > 0)."""
    sched.set_timesteps(n)
    if start:
        if hasattr(sched, "set_begin_index"):  # sigma schedulers; DDIM steps by timestep value
            sched.set_begin_index(start)
        clean, eps = (torch.from_numpy(a) for a in noise)
        x = sched.add_noise(clean, eps, sched.timesteps[start:start + 1].repeat(SHAPE[0]))
    else:
        x = torch.from_numpy(noise) * sched.init_noise_sigma
    scaled, prev, x0 = [], [], []
    for i, t in enumerate(sched.timesteps[start:], start):
        scaled.append(sched.scale_model_input(x, t).numpy())
        out = sched.step(torch.from_numpy(outputs[i]), t, x)
        x = out.prev_sample
        prev.append(x.numpy())
        x0.append(out.pred_original_sample.numpy())
    return np.stack(scaled), np.stack(prev), np.stack(x0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def jax_loop(sched, start, plan, x, outputs):
    """Steps start..n-1 as one scan: per step (scale_model_input output, prev_sample, pred_original_sample)."""

    def body(carry, inputs):
        x, state = carry
        i, out = inputs
        scaled = sched.scale_model_input(plan, x, i)
        x, state, x0 = sched.step(plan, state, out, i, x)
        return (x, state), (scaled, x, x0)

    steps = jnp.arange(start, plan.timesteps.shape[0])
    _, ys = jax.lax.scan(body, (x, sched.init_state(plan, x)), (steps, outputs[start:]))
    return ys


@pytest.mark.parametrize("n", [15, 50])
@pytest.mark.parametrize("case", list(CASES))
def test_loop_matches_diffusers_step_for_step(case, n):
    name, config = CASES[case]
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(SHAPE, dtype=np.float32)
    outputs = rng.standard_normal((n,) + SHAPE, dtype=np.float32)
    ref_sched = torch_scheduler(name, config)
    ref = torch_loop(ref_sched, n, noise, outputs)

    sched = schedulers.get_scheduler(name, config)
    plan = sched.set_timesteps(n)
    np.testing.assert_array_equal(np.asarray(plan.timesteps), ref_sched.timesteps.numpy().astype(np.float32))
    assert float(plan.init_noise_sigma) == pytest.approx(float(ref_sched.init_noise_sigma), rel=1e-6)
    ours = jax_loop(sched, 0, plan, jnp.asarray(noise) * plan.init_noise_sigma, jnp.asarray(outputs))
    for what, a, b in zip(("scale_model_input", "prev_sample", "pred_original_sample"), ours, ref):
        errs = [rel_err(a[i], b[i]) for i in range(n)]
        assert max(errs) <= CASE_TOL.get(case, TOL), f"{what}: step {int(np.argmax(errs))} rel err {max(errs):.2e}"


@pytest.mark.parametrize("name", list(DIFFUSERS_CLASS))
def test_add_noise_and_mid_schedule_start_match_diffusers(name):
    """Noising a clean sample to step k ('encoded' capture, img2img) and denoising from there."""
    n, k = 15, 6
    rng = np.random.default_rng(1)
    clean, eps = rng.standard_normal((2,) + SHAPE, dtype=np.float32)
    outputs = rng.standard_normal((n,) + SHAPE, dtype=np.float32)
    ref_sched = torch_scheduler(name, SD_V1)
    ref_sched.set_timesteps(n)
    sched = schedulers.get_scheduler(name, SD_V1)
    plan = sched.set_timesteps(n)

    idx = np.array([k, n - 1])  # one step index per sample
    ref = ref_sched.add_noise(torch.from_numpy(clean), torch.from_numpy(eps), ref_sched.timesteps[idx]).numpy()
    assert rel_err(sched.add_noise(plan, clean, eps, jnp.asarray(idx)), ref) <= TOL

    ref = torch_loop(ref_sched, n, (clean, eps), outputs, start=k)
    x = sched.add_noise(plan, jnp.asarray(clean), jnp.asarray(eps), k)
    ours = jax_loop(sched, k, plan, x, jnp.asarray(outputs))
    for a, b in zip(ours, ref):
        assert max(rel_err(a[i], b[i]) for i in range(n - k)) <= TOL


def test_unknown_and_unsupported_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown scheduler 'pndm'; valid names: lms, LMSDiscreteScheduler, ddim"):
        schedulers.get_scheduler("pndm", SD_V1)
    with pytest.raises(ValueError, match="use_karras_sigmas=True is not supported"):
        schedulers.get_scheduler("euler", {**SD_V1, "use_karras_sigmas": True})
    with pytest.raises(ValueError, match="prediction_type='flow_prediction' is not supported.*'v_prediction'"):
        schedulers.SchedulerConfig.from_dict({"prediction_type": "flow_prediction"})
    with pytest.raises(ValueError, match="timestep_spacing='karras' is not supported.*'trailing'"):
        schedulers.SchedulerConfig(timestep_spacing="karras")

    (tmp_path / "scheduler_config.json").write_text(json.dumps(SD_V1))
    with pytest.raises(ValueError, match="PNDMScheduler, which jaxprobe does not implement; pass name= one of lms"):
        schedulers.from_pretrained_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no scheduler_config.json"):
        schedulers.from_pretrained_dir(tmp_path / "nowhere")


def test_from_pretrained_dir_reads_diffusers_save_config(tmp_path):
    """`_class_name` picks the scheduler; a PNDM config drives LMS with LMS's own defaults (linspace spacing)."""
    ref = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", timestep_spacing="trailing")
    ref.save_config(tmp_path / "euler")
    sched = schedulers.from_pretrained_dir(tmp_path / "euler")
    assert isinstance(sched, schedulers.EulerScheduler) and sched.timestep_spacing == "trailing"

    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "scheduler_config.json").write_text(json.dumps(SD_V1))
    lms = schedulers.from_pretrained_dir(tmp_path / "sd", name="LMSDiscreteScheduler")
    assert lms == schedulers.get_scheduler("lms", SD_V1) and lms.timestep_spacing == "linspace"
    assert schedulers.from_pretrained_dir(tmp_path / "sd", name="ddim").timestep_spacing == "leading"
