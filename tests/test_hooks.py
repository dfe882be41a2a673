"""hooks.py on a small Flax model whose every submodule output can be computed by hand: selection by pattern,
recording, editing (downstream sees the edit, edits run in forward order), token layout and the finite check."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe import hooks

WIDTH = 4


class Block(nn.Module):
    """relu(proj(x)): a block with one child, named like a diffusers block."""

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(WIDTH, name="proj")(x))


class Net(nn.Module):
    """down_blocks_0 -> down_blocks_1 -> up_blocks_0 -> out, each output the next one's input."""

    @nn.compact
    def __call__(self, x):
        for name in ("down_blocks_0", "down_blocks_1", "up_blocks_0"):
            x = Block(name=name)(x)
        return nn.Dense(2, name="out")(x)

    def dummy_inputs(self):
        return (jnp.zeros((1, WIDTH)),)


NET = Net()
BLOCKS = ("down_blocks_0", "down_blocks_1", "up_blocks_0")


@pytest.fixture(scope="module")
def net():
    params = NET.init(jax.random.key(0), *NET.dummy_inputs())["params"]
    x = jax.random.normal(jax.random.key(1), (3, WIDTH))
    return params, x


def _by_hand(params, x, start: int = 0):
    """Every block output from block `start` on, and the model output: {path: output}, output."""
    outs = {}
    for name in BLOCKS[start:]:
        x = Block().apply({"params": params[name]}, x)
        outs[name] = x
    return outs, nn.Dense(2).apply({"params": params["out"]}, x)


def test_module_paths_list_every_call_parent_first():
    assert hooks.module_paths(NET) == ("down_blocks_0", "down_blocks_0/proj", "down_blocks_1", "down_blocks_1/proj",
                                       "up_blocks_0", "up_blocks_0/proj", "out")


def test_select_layers_in_call_order_from_flax_or_dotted_patterns():
    # call order, whatever the patterns' order; fnmatch's '*' crosses '/', so it takes the children too
    assert hooks.select_layers(NET, ["up_*", "down_blocks_0"]) == ("down_blocks_0", "up_blocks_0",
                                                                  "up_blocks_0/proj")
    assert hooks.select_layers(NET, "*/proj") == ("down_blocks_0/proj", "down_blocks_1/proj", "up_blocks_0/proj")
    assert hooks.select_layers(NET, "down_blocks.1.proj") == ("down_blocks_1/proj",)  # diffusers' dotted form
    with pytest.raises(ValueError, match="'down_blocks_7' matches no Net module; nearest valid paths: down_blocks_1, "
                                         "down_blocks_0"):
        hooks.select_layers(NET, ["down_blocks_0", "down_blocks_7"])
    with pytest.raises(ValueError, match="no layer patterns given"):
        hooks.select_layers(NET, [])


@pytest.mark.parametrize("jit", [False, True])
def test_record_returns_each_output_and_changes_nothing(net, jit):
    params, x = net
    run = (lambda fn: jax.jit(fn)) if jit else (lambda fn: fn)
    out, rec = run(lambda p, x: hooks.apply(NET, p, x, record=BLOCKS + ("up_blocks_0/proj",)))(params, x)
    want, want_out = _by_hand(params, x)
    assert set(rec) == set(BLOCKS) | {"up_blocks_0/proj"}
    for name in BLOCKS:
        np.testing.assert_allclose(rec[name], want[name], rtol=1e-6)
    assert np.all(np.asarray(rec["up_blocks_0"]) >= 0) and np.any(np.asarray(rec["up_blocks_0/proj"]) < 0)  # relu
    np.testing.assert_allclose(out, want_out, rtol=1e-6)
    np.testing.assert_allclose(out, NET.apply({"params": params}, x), rtol=1e-6)
    plain, nothing = hooks.apply(NET, {"params": params}, x)  # a whole variables dict passes through
    assert nothing == {}
    np.testing.assert_allclose(plain, want_out, rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_an_edit_replaces_the_output_for_everything_downstream(net, jit):
    params, x = net
    shift = jnp.arange(WIDTH, dtype=jnp.float32)
    edit = {"down_blocks_0": lambda o: o * 0 + shift}
    run = (lambda fn: jax.jit(fn)) if jit else (lambda fn: fn)
    out, rec = run(lambda p, x: hooks.apply(NET, p, x, record=BLOCKS, edit=edit))(params, x)
    np.testing.assert_allclose(rec["down_blocks_0"], np.broadcast_to(shift, x.shape))  # recorded: the edited one
    want, want_out = _by_hand(params, jnp.broadcast_to(shift, x.shape), start=1)
    for name in BLOCKS[1:]:
        np.testing.assert_allclose(rec[name], want[name], rtol=1e-6)
    np.testing.assert_allclose(out, want_out, rtol=1e-6)


def test_edits_run_in_forward_order(net):
    """A later edit sees the output that earlier edits already changed."""
    params, x = net
    seen = {}

    def later(o):
        seen["input"] = o
        return o + 1.0

    _, rec = hooks.apply(NET, params, x, record=BLOCKS,
                         edit={"up_blocks_0": later, "down_blocks_0": lambda o: jnp.zeros_like(o)})
    want, _ = _by_hand(params, jnp.zeros_like(x), start=1)
    np.testing.assert_allclose(seen["input"], want["up_blocks_0"], rtol=1e-6)
    np.testing.assert_allclose(rec["up_blocks_0"], want["up_blocks_0"] + 1.0, rtol=1e-6)


def test_an_edit_must_keep_the_shape_and_dtype(net):
    params, x = net
    for bad in (lambda o: o[:, :2], lambda o: o.astype(jnp.bfloat16)):
        with pytest.raises(AssertionError, match="assert_trees_all_equal_shapes_and_dtypes"):
            hooks.apply(NET, params, x, edit={"down_blocks_1": bad})


def test_to_spatial_lays_tokens_on_the_latent_grid():
    tokens = jnp.arange(2 * 16 * 3, dtype=jnp.float32).reshape(2, 16, 3)  # a 16x16 latent at stride 4: 4x4 tokens
    grid = hooks.to_spatial(tokens, (16, 16))
    assert grid.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(grid[:, 1, 2], tokens[:, 1 * 4 + 2])  # row-major
    assert hooks.to_spatial(jnp.zeros((5, 8, 32, 3)), (8, 16)).shape == (5, 8, 4, 8, 3)  # a wide latent, stride 2
    with pytest.raises(ValueError, match="cannot lay 15 tokens out on the \\(16, 16\\) latent grid"):
        hooks.to_spatial(jnp.zeros((1, 15, 3)), (16, 16))


class FiniteTest(chex.TestCase):
    """The one finite check, used by capture (check_finite) and by the probes' input checks (all_finite)."""

    def test_names_every_layer_with_nan_or_inf(self):
        acts = {"a": jnp.ones((2, 3)), "b": jnp.array([1.0, jnp.nan]), "c": jnp.array([jnp.inf]),
                "d": jnp.full((4,), 3e38, jnp.float32), "e": jnp.array([-jnp.inf], jnp.bfloat16)}
        with pytest.raises(ValueError, match=r"non-finite \(NaN/inf\) activations at layer\(s\): b, c, e;"):
            hooks.check_finite(acts)
        hooks.check_finite({"a": jnp.ones(3), "big": acts["d"]})  # large but finite: no overflow in the check
        assert [hooks.all_finite(v) for v in acts.values()] == [True, False, False, True, False]
        assert hooks.all_finite(np.arange(5)) and hooks.all_finite(np.zeros(3, bool))  # integers, bools

    @chex.variants(with_jit=True, without_jit=True)
    def test_agrees_with_isfinite_everywhere(self):
        rng = np.random.default_rng(0)
        for _ in range(20):
            a = rng.normal(size=(3, 5)).astype(np.float32)
            for _ in range(rng.integers(0, 3)):
                a[tuple(rng.integers(0, s) for s in a.shape)] = rng.choice([np.nan, np.inf, -np.inf])
            assert bool(self.variant(hooks._finite)(jnp.asarray(a))) == bool(np.isfinite(a).all())
