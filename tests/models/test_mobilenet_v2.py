"""Flax MobileNetV2 against torchvision's `mobilenet_v2` (golden files from tests/make_mobilenet_v2_golden.py, since
torchvision does not import here), the safetensors loader/saver, and train mode."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors
import safetensors.numpy
from flax import traverse_util
from make_mobilenet_v2_golden import CASES, IMAGE_SCALE, OUT, decode_state

from jaxprobe import hooks
from jaxprobe.models import convert, load_mobilenet_v2, save_mobilenet_v2
from jaxprobe.models.mobilenet_v2 import MobileNetV2, MobileNetV2Config, variable_shapes


def _golden(case: str) -> dict[str, np.ndarray]:
    return safetensors.numpy.load_file(OUT / f"mobilenet_v2_{case}.safetensors")


@pytest.fixture(scope="module", params=sorted(CASES))
def golden(request, tmp_path_factory):
    """(case, golden tensors, torchvision-format checkpoint path without metadata)."""
    tensors = _golden(request.param)
    path = tmp_path_factory.mktemp(request.param) / "mobilenet_v2.safetensors"
    state = decode_state(tensors)
    state.update({k[: -len("running_var")] + "num_batches_tracked": np.zeros((), np.int64)
                  for k in list(state) if k.endswith(".running_var")})
    safetensors.numpy.save_file(state, str(path))
    return request.param, tensors, path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The project's setting (width 0.5, 16 classes) loaded from the golden checkpoint."""
    path = tmp_path_factory.mktemp("small") / "ckpt.safetensors"
    safetensors.numpy.save_file(decode_state(_golden("small")), str(path))
    return path, *load_mobilenet_v2(path)


@pytest.fixture(scope="module")
def initialised():
    """A freshly initialised width-0.5, 16-class model (init compiles slowly on XLA:CPU, so it is shared)."""
    module = MobileNetV2(MobileNetV2Config(num_classes=16, width_mult=0.5))
    return module, jax.jit(module.init)(jax.random.key(0), *module.dummy_inputs())  # jitted: ~1/3 faster than eager


def test_matches_torchvision(golden):
    case, tensors, path = golden
    width, classes = CASES[case][:2]
    module, variables = load_mobilenet_v2(path)  # width inferred from shapes: the file has no metadata
    assert module.config == MobileNetV2Config(num_classes=classes, width_mult=width)
    assert set(variables) == {"params", "batch_stats"}
    images = tensors["images_nhwc"].astype(np.float32) * IMAGE_SCALE
    wanted = sorted(k for k in tensors if k.startswith("features_"))
    run = jax.jit(lambda v, x: module.apply(v, x, train=False, capture_intermediates=True,
                                            mutable=["intermediates"]))
    logits, state = run(variables, images)
    assert logits.shape == tensors["logits"].shape
    ours = {"logits": logits, **{name: state["intermediates"][name]["__call__"][0] for name in wanted}}
    chex.assert_trees_all_close(ours, {name: tensors[name] for name in ours}, atol=1e-4, rtol=0)


def test_save_load_round_trip(small, tmp_path):
    path, module, variables = small
    save_mobilenet_v2(tmp_path / "fp32.safetensors", module, variables)
    again, reloaded = load_mobilenet_v2(tmp_path / "fp32.safetensors")
    assert again.config == module.config
    flat, flat_again = traverse_util.flatten_dict(variables), traverse_util.flatten_dict(reloaded)
    assert flat.keys() == flat_again.keys()
    assert all(np.array_equal(flat[k], flat_again[k]) and flat_again[k].dtype == np.float32 for k in flat)
    with safetensors.safe_open(str(tmp_path / "fp32.safetensors"), "numpy") as f:
        assert f.metadata() == {"format": "pt", "width_mult": "0.5"}
        keys = set(f.keys())
        assert f.get_tensor("features.3.conv.1.1.num_batches_tracked").dtype == np.int64
    torchvision = set(safetensors.numpy.load_file(path))  # the golden torchvision state dict's keys
    assert keys == torchvision | {k[: -len("running_var")] + "num_batches_tracked"
                                  for k in torchvision if k.endswith("running_var")}

    save_mobilenet_v2(tmp_path / "fp16.safetensors", module, variables, dtype=np.float16)
    assert (tmp_path / "fp16.safetensors").stat().st_size < 0.55 * (tmp_path / "fp32.safetensors").stat().st_size
    _, half = load_mobilenet_v2(tmp_path / "fp16.safetensors", num_classes=16, width_mult=0.5)
    chex.assert_trees_all_equal_dtypes(half, jax.tree.map(lambda v: v.astype(np.float32), variables))
    chex.assert_trees_all_close(half, variables, rtol=1e-3, atol=1e-7)


def test_layout_conversions(small):
    """Depthwise kernels are [kh, kw, 1, C], convs HWIO and the classifier (in, out), against the torch file."""
    path, _, variables = small
    state = safetensors.numpy.load_file(path)
    params = variables["params"]
    dw = state["features.2.conv.1.0.weight"]  # [C, 1, 3, 3]
    np.testing.assert_array_equal(params["features_2"]["conv_1_0"]["kernel"], dw.transpose(2, 3, 1, 0))
    assert params["features_2"]["conv_1_0"]["kernel"].shape == (3, 3, 1, dw.shape[0])
    np.testing.assert_array_equal(params["features_0"]["layers_0"]["kernel"],
                                  state["features.0.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["classifier_1"]["kernel"], state["classifier.1.weight"].T)
    np.testing.assert_array_equal(variables["batch_stats"]["features_5"]["conv_3"]["var"],
                                  state["features.5.conv.3.running_var"])


def test_checkpoint_that_does_not_fit(small, tmp_path):
    path, module, variables = small
    with pytest.raises(convert.WeightMismatchError, match=r"width_mult=0\.75.*mis-shaped") as err:
        load_mobilenet_v2(path, width_mult=0.75)
    assert "features.0.0.weight: checkpoint (16, 3, 3, 3) vs model (24, 3, 3, 3)" in str(err.value)
    with pytest.raises(ValueError, match="num_classes=10 given but .* has 16 classes"):
        load_mobilenet_v2(path, num_classes=10)

    state = safetensors.numpy.load_file(path)
    del state["features.4.conv.1.1.running_var"]
    state["features.4.conv.9.weight"] = np.zeros(3, np.float32)
    broken = tmp_path / "broken.safetensors"
    safetensors.numpy.save_file(state, str(broken), metadata={"width_mult": "0.5"})
    with pytest.raises(convert.WeightMismatchError, match=r"weights in .*broken\.safetensors do not fit the "
                       r"mobilenet_v2\(width_mult=0\.5, num_classes=16\) \(1 missing, 1 unexpected, 0 mis-shaped"
                       ) as err:
        load_mobilenet_v2(broken)
    assert "features.4.conv.1.1.running_var" in str(err.value) and "features.4.conv.9.weight" in str(err.value)
    safetensors.numpy.save_file(state, str(broken))
    with pytest.raises(ValueError, match="fits no torchvision mobilenet_v2"):  # no metadata: no width fits
        load_mobilenet_v2(broken)
    save_mobilenet_v2(tmp_path / "ok.safetensors", module, variables)
    with pytest.raises(ValueError, match="saved with width_mult=0.5"):
        load_mobilenet_v2(tmp_path / "ok.safetensors", width_mult=1.0)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mobilenet_v2(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="unreadable"):
        load_mobilenet_v2(tmp_path / "junk.safetensors")


def test_config_validation():
    for bad in (dict(width_mult=0), dict(width_mult=-1.0), dict(num_classes=0), dict(dropout=1.0)):
        with pytest.raises(ValueError, match="MobileNetV2Config"):
            MobileNetV2Config(**bad)


@pytest.mark.slow  # fast tier <= 5 min on 2 cores: closeness and train-mode checks run in the slow tier
def test_train_mode_updates_batch_stats_and_has_finite_gradient(initialised):
    """One jitted training step (its compile takes most of this test's ~15 s on a 2-core CPU)."""
    module, variables = initialised
    images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    labels = jnp.arange(4) % 16

    @jax.jit
    def step(params, batch_stats, key):
        def loss(p):
            logits, new = module.apply({"params": p, "batch_stats": batch_stats}, images, train=True,
                                       mutable=["batch_stats"], rngs={"dropout": key})
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels]), new["batch_stats"]
        return jax.value_and_grad(loss, has_aux=True)(params)

    (loss, stats), grads = step(variables["params"], variables["batch_stats"], jax.random.key(2))
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert any(np.any(g != 0) for g in jax.tree.leaves(grads["features_0"]))
    old, new = variables["batch_stats"]["features_3"]["conv_1_1"], stats["features_3"]["conv_1_1"]
    assert not np.allclose(old["mean"], new["mean"]) and not np.allclose(old["var"], new["var"])
    (other, _), _ = step(variables["params"], variables["batch_stats"], jax.random.key(3))
    assert other != loss  # dropout is on in train mode: another dropout key, another loss


def test_init_like_torchvision(initialised):
    module, variables = initialised
    params = variables["params"]
    kernel = params["features_18"]["layers_0"]["kernel"]  # 1x1, fan_out = 1280: std sqrt(2 / 1280)
    assert abs(float(np.std(kernel)) / np.sqrt(2 / 1280) - 1) < 0.05
    np.testing.assert_array_equal(params["features_18"]["layers_1"]["scale"], 1)
    np.testing.assert_array_equal(variables["batch_stats"]["features_18"]["layers_1"]["var"], 1)
    assert abs(float(np.std(params["classifier_1"]["kernel"])) / 0.01 - 1) < 0.05
    np.testing.assert_array_equal(params["classifier_1"]["bias"], 0)
    # the loader's template (built from `layout` without tracing) is exactly what init makes
    chex.assert_trees_all_equal_shapes_and_dtypes(variable_shapes(module.config), variables)


def _top_features(module) -> list[str]:
    return [p for p in hooks.module_paths(module) if "/" not in p and p.startswith("features_")]


def test_module_paths_lists_every_feature_block():
    module = MobileNetV2(MobileNetV2Config(num_classes=16, width_mult=0.5))
    assert sorted(_top_features(module)) == sorted(f"features_{k}" for k in range(19))
    assert "classifier_1" in hooks.module_paths(module)
    assert hooks.select_layers(module, "features.7") == ("features_7",)


def test_module_paths_lists_features_in_call_order():
    module = MobileNetV2(MobileNetV2Config(num_classes=16, width_mult=0.5))
    assert _top_features(module) == [f"features_{k}" for k in range(19)]
