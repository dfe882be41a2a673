"""Sharding is a config change: on a mesh of 8 host devices, capture (trained, randomized and VAE), the intervention,
probe fits and the concept study's capture and probes give the single-device results; a mesh that does not fit
the devices or the batch is one clear error naming the valid sizes."""
import json
import sys

import numpy as np
import pytest
from multihost import run_one, run_processes

from jaxprobe import mesh

# Run in a fresh process: the host device count is fixed when jax starts. Each comparison is against one device
# running the same per-device batch (XLA:CPU's float results depend on the batch size it is given, by ~1e-6
# relative; the sharded program runs each device's slice exactly as one device runs that slice alone), and the
# whole-batch single-device run is reported too.
_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jaxprobe import hooks, mesh, testing
from jaxprobe.concepts import sweep as concept_sweep
from jaxprobe.diffusion import sampling
from jaxprobe.models import mobilenet_v2
from jaxprobe.probing import fit, saved
from jaxprobe.scene import capture, intervene
from jaxprobe.scene.tasks import SALIENCY

assert jax.device_count() == 8, jax.devices()
MESH = mesh.make(data=2, probe=4)
out = {}

def diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

def halves(fn):  # one device, each data shard's slice on its own
    parts = [fn(slice(0, 4)), fn(slice(4, 8))]
    return jax.tree.map(lambda *p: np.concatenate(p), *parts)

pipe = testing.tiny_pipeline()
prompts = ["a red ball", "a blue cube", "two green cones", "a ball", "a cube left", "red", "blue balls", "x"]
layers = hooks.select_layers(pipe.unet, capture.DEFAULT_LAYERS)
kw = dict(layers=layers, steps=(0, 2), num_inference_steps=3, randomized_seed=1, vae_baselines=("vae", "vae_x0"))
keep = lambda r: {"images": r.images.astype(np.float32), "acts": r.acts, "randomized": r.randomized, "vae": r.vae,
                  "vae_x0": r.vae_x0}
ref = halves(lambda s: keep(capture.capture_sweep(pipe, prompts[s], seed=list(range(8))[s], **kw)))
whole = keep(capture.capture_sweep(pipe, prompts, seed=list(range(8)), **kw))
with jax.set_mesh(MESH):
    got = keep(capture.capture_sweep(pipe, prompts, seed=list(range(8)), **kw))
    odd = capture.capture_sweep(pipe, prompts[:3], seed=[0, 1, 2], **kw).acts  # padded to 4, trimmed back
odd_ref = [capture.capture_sweep(pipe, p, seed=s, **kw).acts for p, s in ((prompts[:2], [0, 1]), (prompts[2:3] * 2, [2, 2]))]
out["capture"] = diff(ref, got)
out["capture_whole_batch"] = diff(whole, got)
out["capture_odd_batch"] = diff(jax.tree.map(lambda a, b: np.concatenate([a, b[:1]]), *odd_ref), odd)

edit_layers = layers[-2:]
probe_set = saved.SavedProbes("trained", SALIENCY, "linear",
                              testing.random_linear_probes(pipe, edit_layers, [0], np.random.default_rng(0)))
stacked, active = intervene.edit_inputs(probe_set, edit_layers, [0], 3)
target = np.zeros((8, 16, 16), bool)
target[:, 4:12, 8:16] = True
hook = intervene.EditHook(edit_layers, SALIENCY, iterations=8, lr=0.05)
edit = lambda s: sampling.sample(pipe, prompts[s], num_inference_steps=3, seed=list(range(8))[s], hook=hook,
                                 extra={"probes": stacked, "active": active, "target": jnp.asarray(target[s])})
ref = halves(lambda s: np.asarray(edit(s).latents))
with jax.set_mesh(MESH):
    got = np.asarray(edit(slice(0, 8)).latents)
out["intervention"] = diff(ref, got)

rng = np.random.default_rng(0)
x = rng.normal(size=(11, 3, 4, 4, 8)).astype(np.float32)  # 11 images, 3 probes: both axes padded
for labels in (rng.random((11, 16, 16)) > 0.5, rng.random((11, 3, 16, 16)) > 0.5):
    for kind in ("linear", "mlp"):
        ref = fit.fit_group(x, labels, SALIENCY, kind=kind, epochs=3)
        with jax.set_mesh(MESH):
            got = fit.fit_group(x, labels, SALIENCY, kind=kind, epochs=3)
        out[f"fit_{kind}_{'per_probe' if labels.ndim == 4 else 'shared'}"] = diff(ref, got)

net = mobilenet_v2.MobileNetV2(mobilenet_v2.MobileNetV2Config(width_mult=0.25, num_classes=4))
variables = net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
names = hooks.select_layers(net, ["features_*"])
ref = concept_sweep.capture(net, variables, images, names, 4)
with jax.set_mesh(MESH):
    got = concept_sweep.capture(net, variables, images, names, 8)  # batches of 8 and 4, 4 and 2 per device
out["concept_capture"] = diff(ref, got)
with jax.set_mesh(MESH):
    try:
        mesh.check_batch(3, "config.batch_size")
    except ValueError as e:
        error = str(e)
print(json.dumps({"diffs": out, "error": error}))
"""


@pytest.mark.slow  # 8 host devices on 2 cores: about 3 minutes
def test_sharded_runs_equal_single_device_runs():
    stdout = run_one([sys.executable, "-c", _SCRIPT], devices=8)
    result = json.loads(stdout.strip().splitlines()[-1])
    diffs = result["diffs"]
    print(diffs)
    assert result["error"] == ("config.batch_size=3 does not split over the mesh's data axis of 2 devices; use a "
                               "multiple of 2 (2, 4, 6, 8, ...) or a data axis in [1, 3]")
    whole = diffs.pop("capture_whole_batch")
    assert whole <= 1e-4  # another per-device batch: XLA:CPU rounds by batch size, amplified over 3 steps
    assert max(diffs.values()) <= 1e-5, diffs


def test_a_batch_pads_to_the_batch_size_and_to_a_split_of_the_data_axis(monkeypatch):
    assert [mesh.pad_count(n) for n in (1, 3)] == [0, 0]  # off a mesh, no batch size: no padding
    assert [mesh.pad_count(n, 4) for n in (1, 3, 4, 6)] == [3, 1, 0, 0]
    monkeypatch.setattr(mesh, "axis_size", lambda name: 4)
    assert [mesh.pad_count(n, 6) for n in (1, 5, 6, 7)] == [7, 3, 2, 1]


def test_mesh_sizes_fill_one_axis_and_name_the_valid_ones():
    assert mesh.sizes(-1, 1, 8) == (8, 1)
    assert mesh.sizes(2, -1, 8) == (2, 4)
    assert mesh.sizes(4, 2, 8) == (4, 2)
    with pytest.raises(ValueError, match=r"data=3 x probe=1 does not fit the 8 devices here; valid: data=1 probe=8, "
                                         r"data=2 probe=4, data=4 probe=2, data=8 probe=1"):
        mesh.sizes(3, 1, 8)
    with pytest.raises(ValueError, match="does not fit the 8 devices"):
        mesh.sizes(2, 2, 8)
    with pytest.raises(ValueError, match="-1"):
        mesh.sizes(-1, -1, 8)
    with pytest.raises(ValueError, match=">= 1"):
        mesh.sizes(0, 1, 8)


_TWO_PROCESSES = r"""
import json, os, sys
from jaxprobe import mesh
mesh.initialize(True)  # JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID from the environment
import jax, numpy as np
from jaxprobe import testing
from jaxprobe.probing import fit
from jaxprobe.scene import capture
from jaxprobe.scene.tasks import SALIENCY

assert (jax.process_count(), jax.device_count()) == (2, 4), (jax.process_count(), jax.devices())
pipe = testing.tiny_pipeline()
prompts = ["a red ball", "a blue cube", "two green cones", "a ball"]
kw = dict(steps=(0, 2), num_inference_steps=3, randomized_seed=1, seed=[0, 1, 2, 3])
rng = np.random.default_rng(0)
x, labels = rng.normal(size=(11, 3, 4, 4, 8)).astype(np.float32), rng.random((11, 16, 16)) > 0.5
with jax.set_mesh(mesh.make(data=2, probe=2)):  # the data axis spans the two processes
    acts = capture.capture_sweep(pipe, prompts, **kw)
    acts = {k: mesh.gather(v) for k, v in {**acts.acts, **{"r/" + n: a for n, a in acts.randomized.items()}}.items()}
    params = fit.fit_group(x, labels, SALIENCY, kind="mlp", epochs=2)
np.savez(os.path.join(sys.argv[1], f"process_{jax.process_index()}.npz"), **acts,
         **{f"probe/{i}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(params))})
"""


@pytest.mark.slow  # two jax.distributed processes on localhost, 2 CPU devices each
def test_two_processes_match_one(tmp_path):
    """A global mesh over 2 processes x 2 devices: capture and probe fits gathered on every process equal a
    1-process run on a mesh of the same shape (4 host devices)."""
    run_processes([sys.executable, "-c", _TWO_PROCESSES, str(tmp_path)], devices_per_process=2)
    one = tmp_path / "one"
    one.mkdir()
    single = _TWO_PROCESSES.replace("mesh.initialize(True)", "pass").replace("(2, 4)", "(1, 4)")
    run_one([sys.executable, "-c", single, str(one)], devices=4)
    ref = dict(np.load(one / "process_0.npz"))
    for i in range(2):
        got = np.load(tmp_path / f"process_{i}.npz")
        assert sorted(got.files) == sorted(ref)
        worst = max(float(np.max(np.abs(got[k] - ref[k]))) for k in ref)
        assert worst <= 1e-5, (i, worst)
