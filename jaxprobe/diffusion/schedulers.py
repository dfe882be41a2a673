"""Diffusion schedulers as pure JAX functions, equal to diffusers' LMSDiscrete, DDIM and EulerDiscrete schedulers.

diffusers schedulers are stateful objects stepped from Python. Here the host part (`set_timesteps`: timesteps,
sigmas, LMS integration coefficients) is computed once in numpy, exactly as diffusers computes it, and returned as
a pytree `plan`; the device part is pure functions of `(plan, state, i)` with `i` the (possibly traced) step index,
so the whole denoising loop is one `lax.scan` inside one `jit`:

    sched = get_scheduler("lms", scheduler_config_dict)
    plan = sched.set_timesteps(15)

    def body(carry, i):
        x, state = carry
        eps = unet(sched.scale_model_input(plan, x, i), plan.timesteps[i])
        x, state, x0 = sched.step(plan, state, eps, i, x)
        return (x, state), x0

    x = noise * plan.init_noise_sigma
    (x, _), x0s = jax.lax.scan(body, (x, sched.init_state(plan, x)), jnp.arange(len(plan.timesteps)))

The schedulers are elementwise, so any sample layout works (jaxprobe uses NHWC). Computation is in float32; the
returned samples have the dtype of `sample`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

from jaxprobe.models.config import Config
from jaxprobe.validate import check_supported

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
LMS_ORDER = 4  # diffusers' LMSDiscreteScheduler.step default, which its pipelines use


@dataclasses.dataclass(frozen=True)
class SchedulerConfig(Config):
    """The scheduler_config.json fields the three schedulers read, named and defaulted as in diffusers.

    `timestep_spacing=None` means the scheduler's own diffusers default ('linspace' for LMS and Euler, 'leading'
    for DDIM), as diffusers' `from_config` uses when the file does not set it. Each scheduler reads only the fields
    its diffusers class has (DDIM ignores `final_sigmas_type`, LMS ignores `rescale_betas_zero_snr`, ...).
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    prediction_type: str = "epsilon"
    timestep_spacing: str | None = None
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False  # DDIM, Euler
    set_alpha_to_one: bool = True  # DDIM
    clip_sample: bool = True  # DDIM
    clip_sample_range: float = 1.0  # DDIM
    final_sigmas_type: str = "zero"  # Euler: 'zero' or 'sigma_min'
    # Options of the diffusers classes that are not implemented; only their defaults are accepted.
    thresholding: bool = False
    interpolation_type: str = "linear"
    timestep_type: str = "discrete"
    use_karras_sigmas: bool | None = False
    use_exponential_sigmas: bool | None = False
    use_beta_sigmas: bool | None = False

    def __post_init__(self):
        if self.trained_betas is not None:
            object.__setattr__(self, "trained_betas", tuple(float(b) for b in self.trained_betas))
        check_supported("scheduler beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        check_supported("scheduler prediction_type", self.prediction_type, PREDICTION_TYPES)
        if self.timestep_spacing is not None:
            check_supported("scheduler timestep_spacing", self.timestep_spacing, TIMESTEP_SPACINGS)
        check_supported("scheduler final_sigmas_type", self.final_sigmas_type, ("zero", "sigma_min"))
        for name in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "thresholding"):
            if getattr(self, name):
                raise ValueError(f"{name}=True is not supported by jaxprobe.schedulers; set it to false")
        check_supported("scheduler interpolation_type", self.interpolation_type, ("linear",))
        check_supported("scheduler timestep_type", self.timestep_type, ("discrete",))


# ---------------------------------------------------------------------------------------------------------------
# Host-side schedule arithmetic (numpy), reproducing diffusers' float32 torch arithmetic bit for bit, except torch's
# CPU sqrt, which is not always correctly rounded (numpy's is): sigmas may differ from diffusers' by one float32 ulp.


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """`torch.linspace(start, end, steps, dtype=torch.float32)` on CPU: float32 step, each half counted from its
    own end with one rounding (fused multiply-add). `np.linspace(...).astype(np.float32)` differs in the last bit."""
    start, end = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([start], np.float32)
    step = np.float64((end - start) / np.float32(steps - 1))
    idx = np.arange(steps)
    low = (np.float64(start) + step * idx).astype(np.float32)
    high = (np.float64(end) - step * (steps - 1 - idx)).astype(np.float32)
    return np.where(idx < steps // 2, low, high)


def torch_cumprod(x: np.ndarray) -> np.ndarray:
    """`torch.cumprod` of a float32 array on CPU: accumulated in float64, each output rounded to float32."""
    return np.cumprod(x.astype(np.float64)).astype(np.float32)


def betas_for_alpha_bar(num_diffusion_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """The 'squaredcos_cap_v2' (cosine) schedule, as diffusers' `betas_for_alpha_bar`."""
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    n = num_diffusion_timesteps
    return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)], np.float32)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Betas rescaled to zero terminal SNR (https://huggingface.co/papers/2305.08891, Algorithm 1), float32."""
    alphas_bar_sqrt = np.sqrt(torch_cumprod(np.float32(1.0) - betas))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return np.float32(1.0) - alphas


def alphas_cumprod(config: SchedulerConfig, *, rescale: bool = False) -> np.ndarray:
    """[num_train_timesteps] float32 cumulative products of 1 - beta, as the diffusers constructors compute them."""
    n = config.num_train_timesteps
    if config.trained_betas is not None:
        betas = np.array(config.trained_betas, np.float32)
    elif config.beta_schedule == "linear":
        betas = torch_linspace(config.beta_start, config.beta_end, n)
    elif config.beta_schedule == "scaled_linear":
        betas = torch_linspace(config.beta_start ** 0.5, config.beta_end ** 0.5, n) ** 2
    else:
        betas = betas_for_alpha_bar(n)
    if rescale:
        betas = rescale_zero_terminal_snr(betas)
    return torch_cumprod(np.float32(1.0) - betas)


def spaced_timesteps(config: SchedulerConfig, spacing: str, n: int, *, integer: bool) -> np.ndarray:
    """Inference timesteps, high to low, as diffusers' `set_timesteps`. `integer`: DDIM's int64 timesteps
    (rounded 'linspace'); otherwise float32 (LMS, Euler: 'linspace' timesteps are fractional)."""
    t_train = config.num_train_timesteps
    if spacing == "linspace":
        if integer:
            return np.linspace(0, t_train - 1, n).round()[::-1].astype(np.int64)
        return np.linspace(0, t_train - 1, n, dtype=np.float32)[::-1].copy()
    if spacing == "leading":
        timesteps = (np.arange(0, n) * (t_train // n)).round()[::-1] + config.steps_offset
    else:  # trailing
        timesteps = np.round(np.arange(t_train, 0, -t_train / n)) - 1
    return timesteps.astype(np.int64 if integer else np.float32)


def _per_sample(v: jax.Array, x: jax.Array) -> jax.Array:
    """Broadcast a per-step scalar (or per-sample [B] vector) against a sample [B,...]."""
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


# ---------------------------------------------------------------------------------------------------------------
# Plans: what `set_timesteps` returns; pytrees of arrays, passed into jit.


@flax.struct.dataclass
class SigmaPlan:
    """Euler plan. timesteps [n] float32 (UNet inputs); sigmas [n+1] (last: 0 or sigma_min); init_noise_sigma []."""

    timesteps: jax.Array
    sigmas: jax.Array
    init_noise_sigma: jax.Array


@flax.struct.dataclass
class LMSPlan:
    """LMS plan: as SigmaPlan, plus lms_coeffs [n, LMS_ORDER], the integration coefficient of step i for the
    derivative k steps back (0 where diffusers uses a lower order)."""

    timesteps: jax.Array
    sigmas: jax.Array
    init_noise_sigma: jax.Array
    lms_coeffs: jax.Array


@flax.struct.dataclass
class DDIMPlan:
    """DDIM plan. timesteps [n] float32 (integer values); alpha_prod_t [n] and alpha_prod_t_prev [n], the cumulative
    alphas at step i's timestep and at diffusers' previous timestep (t - T // n); init_noise_sigma [] (1)."""

    timesteps: jax.Array
    alpha_prod_t: jax.Array
    alpha_prod_t_prev: jax.Array
    init_noise_sigma: jax.Array


# ---------------------------------------------------------------------------------------------------------------
# Schedulers. Frozen dataclasses of a config: hashable (jit static arguments, cache keys), no state of their own.


@dataclasses.dataclass(frozen=True)
class _Scheduler:
    config: SchedulerConfig = SchedulerConfig()
    default_spacing: ClassVar[str] = "linspace"

    @property
    def timestep_spacing(self) -> str:
        return self.config.timestep_spacing or self.default_spacing

    def init_state(self, plan, sample: jax.Array):
        """Loop state carried between steps (nothing for one-step methods)."""
        del plan, sample
        return ()


class _SigmaScheduler(_Scheduler):
    """Shared by LMS and Euler: x_t = x_0 + sigma_t * noise, model input scaled by 1 / sqrt(sigma^2 + 1)."""

    def _sigmas(self, n: int, *, rescale: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(timesteps [n] float32, sigmas [n] float64 interpolated at them, alphas_cumprod [T]), as diffusers'
        set_timesteps."""
        if n < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {n}")
        ac = alphas_cumprod(self.config, rescale=rescale)
        if rescale:
            ac[-1] = 2.0 ** -24  # diffusers' Euler: keeps the terminal sigma finite
        train_sigmas = np.sqrt((np.float32(1.0) - ac) / ac)
        timesteps = spaced_timesteps(self.config, self.timestep_spacing, n, integer=False)
        return timesteps, np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas), ac

    def _init_noise_sigma(self, sigmas: np.ndarray) -> jax.Array:
        max_sigma = sigmas.max()
        if self.timestep_spacing in ("linspace", "trailing"):
            return jnp.asarray(max_sigma)
        return jnp.asarray(np.sqrt(max_sigma ** 2 + np.float32(1.0)))

    def scale_model_input(self, plan, sample: jax.Array, i) -> jax.Array:
        """UNet input at step i: sample / sqrt(sigma_i^2 + 1). sample [B,...] -> same shape."""
        sigma = plan.sigmas[i]
        return (sample / jnp.sqrt(sigma * sigma + 1.0)).astype(sample.dtype)

    def add_noise(self, plan, original: jax.Array, noise: jax.Array, i) -> jax.Array:
        """Clean sample noised to the level of step i (scalar or one index per sample [B]): x0 + sigma_i * noise.
        Equal to diffusers' add_noise(original, noise, timesteps[i])."""
        return original + noise * _per_sample(plan.sigmas[jnp.asarray(i)], original)

    def _pred_x0(self, sigma, model_output, sample):
        p = self.config.prediction_type
        if p == "epsilon":
            return sample - sigma * model_output
        if p == "v_prediction":
            return model_output * (-sigma / jnp.sqrt(sigma * sigma + 1.0)) + sample / (sigma * sigma + 1.0)
        return model_output


class LMSScheduler(_SigmaScheduler):
    """diffusers' LMSDiscreteScheduler: linear multistep (order 4) on the probability-flow ODE in sigma."""

    def set_timesteps(self, num_inference_steps: int) -> LMSPlan:
        timesteps, sigmas, _ = self._sigmas(num_inference_steps)
        sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        coeffs = np.zeros((len(timesteps), LMS_ORDER), np.float32)
        for i in range(len(timesteps)):
            order = min(i + 1, LMS_ORDER)
            coeffs[i, :order] = [lms_coefficient(sigmas, order, i, k) for k in range(order)]
        return LMSPlan(timesteps=jnp.asarray(timesteps), sigmas=jnp.asarray(sigmas),
                       init_noise_sigma=self._init_noise_sigma(sigmas), lms_coeffs=jnp.asarray(coeffs))

    def init_state(self, plan: LMSPlan, sample: jax.Array) -> jax.Array:
        """Derivative history [LMS_ORDER, *sample.shape] float32, newest first (zeros: not yet computed)."""
        del plan
        return jnp.zeros((LMS_ORDER,) + sample.shape, jnp.float32)

    def step(self, plan: LMSPlan, state: jax.Array, model_output: jax.Array, i, sample: jax.Array):
        """-> (prev_sample, new_state, pred_original_sample), all [B,...] but the state."""
        x = sample.astype(jnp.float32)
        sigma = plan.sigmas[i]
        x0 = self._pred_x0(sigma, model_output.astype(jnp.float32), x)
        history = jnp.concatenate([((x - x0) / sigma)[None], state[:-1]])
        coeffs = plan.lms_coeffs[i]
        update = coeffs[0] * history[0]  # summed newest first, as diffusers' sum(...)
        for k in range(1, LMS_ORDER):
            update = update + coeffs[k] * history[k]
        return (x + update).astype(sample.dtype), history, x0.astype(sample.dtype)


def lms_coefficient(sigmas: np.ndarray, order: int, t: int, current_order: int) -> float:
    """diffusers' `get_lms_coefficient`: integral over [sigma_t, sigma_t+1] of the Lagrange basis polynomial of
    the derivative `current_order` steps back. The integrand is evaluated in float32 like diffusers' torch one."""
    def basis(tau):
        prod = 1.0
        for k in range(order):
            if k != current_order:
                prod *= (tau - sigmas[t - k]) / (sigmas[t - current_order] - sigmas[t - k])
        return prod

    return integrate.quad(basis, float(sigmas[t]), float(sigmas[t + 1]), epsrel=1e-4)[0]


class EulerScheduler(_SigmaScheduler):
    """diffusers' EulerDiscreteScheduler (s_churn = 0: deterministic Euler steps in sigma)."""

    def set_timesteps(self, num_inference_steps: int) -> SigmaPlan:
        timesteps, sigmas, ac = self._sigmas(num_inference_steps, rescale=self.config.rescale_betas_zero_snr)
        last = 0.0 if self.config.final_sigmas_type == "zero" else np.sqrt((np.float32(1.0) - ac[0]) / ac[0])
        sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
        return SigmaPlan(timesteps=jnp.asarray(timesteps), sigmas=jnp.asarray(sigmas),
                         init_noise_sigma=self._init_noise_sigma(sigmas))

    def step(self, plan: SigmaPlan, state, model_output: jax.Array, i, sample: jax.Array):
        """-> (prev_sample, state, pred_original_sample)."""
        x = sample.astype(jnp.float32)
        sigma = plan.sigmas[i]
        x0 = self._pred_x0(sigma, model_output.astype(jnp.float32), x)
        prev = x + (x - x0) / sigma * (plan.sigmas[i + 1] - sigma)
        return prev.astype(sample.dtype), state, x0.astype(sample.dtype)


class DDIMScheduler(_Scheduler):
    """diffusers' DDIMScheduler with eta = 0 (deterministic DDIM)."""

    default_spacing: ClassVar[str] = "leading"

    def set_timesteps(self, num_inference_steps: int) -> DDIMPlan:
        c, n = self.config, num_inference_steps
        if not 1 <= n <= c.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in [1, {c.num_train_timesteps}] "
                             f"(num_train_timesteps), got {n}")
        ac = alphas_cumprod(c, rescale=c.rescale_betas_zero_snr)
        final = np.float32(1.0) if c.set_alpha_to_one else ac[0]
        timesteps = spaced_timesteps(c, self.timestep_spacing, n, integer=True)
        prev = timesteps - c.num_train_timesteps // n  # diffusers' previous timestep, whatever the spacing
        return DDIMPlan(timesteps=jnp.asarray(timesteps.astype(np.float32)),
                        alpha_prod_t=jnp.asarray(ac[timesteps]),
                        alpha_prod_t_prev=jnp.asarray(np.where(prev >= 0, ac[np.maximum(prev, 0)], final)),
                        init_noise_sigma=jnp.asarray(1.0, jnp.float32))

    def scale_model_input(self, plan: DDIMPlan, sample: jax.Array, i) -> jax.Array:
        """DDIM feeds the sample to the UNet unscaled."""
        del plan, i
        return sample

    def add_noise(self, plan: DDIMPlan, original: jax.Array, noise: jax.Array, i) -> jax.Array:
        """sqrt(alpha_t) * original + sqrt(1 - alpha_t) * noise at step i's timestep (i scalar or [B]).
        Equal to diffusers' add_noise(original, noise, timesteps[i])."""
        a = _per_sample(plan.alpha_prod_t[jnp.asarray(i)], original)
        return jnp.sqrt(a) * original + jnp.sqrt(1.0 - a) * noise

    def step(self, plan: DDIMPlan, state, model_output: jax.Array, i, sample: jax.Array):
        """-> (prev_sample, state, pred_original_sample)."""
        c = self.config
        x, out = sample.astype(jnp.float32), model_output.astype(jnp.float32)
        a_t, a_prev = plan.alpha_prod_t[i], plan.alpha_prod_t_prev[i]
        sqrt_a, sqrt_b = jnp.sqrt(a_t), jnp.sqrt(1.0 - a_t)
        if c.prediction_type == "epsilon":
            x0, eps = (x - sqrt_b * out) / sqrt_a, out
        elif c.prediction_type == "sample":
            x0, eps = out, (x - sqrt_a * out) / sqrt_b
        else:  # v_prediction
            x0, eps = sqrt_a * x - sqrt_b * out, sqrt_a * out + sqrt_b * x
        if c.clip_sample:
            x0 = jnp.clip(x0, -c.clip_sample_range, c.clip_sample_range)
        prev = jnp.sqrt(a_prev) * x0 + jnp.sqrt(1.0 - a_prev) * eps
        return prev.astype(sample.dtype), state, x0.astype(sample.dtype)


SCHEDULERS: dict[str, type[_Scheduler]] = {
    "lms": LMSScheduler, "LMSDiscreteScheduler": LMSScheduler,
    "ddim": DDIMScheduler, "DDIMScheduler": DDIMScheduler,
    "euler": EulerScheduler, "EulerDiscreteScheduler": EulerScheduler,
}


def get_scheduler(name: str, config: SchedulerConfig | Mapping[str, Any] | None = None) -> _Scheduler:
    """Scheduler `name` ('lms', 'ddim', 'euler' or the diffusers class name) driven by `config` (a SchedulerConfig
    or any diffusers scheduler_config.json dict, e.g. SD's PNDMScheduler one, as diffusers' `from_config`)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; valid names: {', '.join(SCHEDULERS)}")
    if config is None:
        config = SchedulerConfig()
    elif not isinstance(config, SchedulerConfig):
        config = SchedulerConfig.from_dict(config)
    return SCHEDULERS[name](config)


def from_pretrained_dir(scheduler_dir: str | os.PathLike, name: str | None = None) -> _Scheduler:
    """Scheduler from a diffusers `scheduler/` directory; `name=None` uses the file's `_class_name`."""
    path = Path(scheduler_dir) / "scheduler_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{scheduler_dir} is not a diffusers scheduler directory: no scheduler_config.json")
    d = json.loads(path.read_text())
    if name is None:
        name = d.get("_class_name")
        if name not in SCHEDULERS:
            raise ValueError(f"{path} is for {name or 'no _class_name'}, which jaxprobe does not implement; "
                             f"pass name= one of {', '.join(SCHEDULERS)} to drive that scheduler with this config")
    return get_scheduler(name, d)
