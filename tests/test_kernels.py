"""Each backend-sensitive kernel's CPU rewrite computes what its plain form computes (values and gradients, within
fp32 summation-order tolerance), and the choice follows the backend, the environment variable and `kernels.use`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe import kernels
from jaxprobe.models import layers, mobilenet_v2
from jaxprobe.probing import fit, probes
from jaxprobe.probing.tasks import Task

SALIENCY = Task("saliency", "mask", ("dice",), "dice")
CONCEPT = Task("concept", "label", ("accuracy",), "accuracy")


def both(name, fn, *args, jit=True):
    """fn(*args) under each implementation of kernel `name` -> {implementation: result}; jitted (one compile
    instead of an eager dispatch per op), traced afresh for each implementation."""
    out = {}
    for impl in kernels.KERNELS[name]:
        with kernels.use(**{name: impl}):
            out[impl] = jax.jit(lambda *a: fn(*a))(*args) if jit else fn(*args)
    return out


def assert_close(results, atol):
    a, b = results.values()
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=atol), a, b)


def test_cpu_gets_its_rewrites_and_overrides_win(monkeypatch):
    assert {n: kernels.choose(n) for n in kernels.KERNELS} == {
        "depthwise_conv": "cpu_shifted", "probe_logits": "cpu_transposed_vjp", "class_ce": "cpu_planes",
        "probe_fit": "cpu_chunked", "attention": "cpu_query_chunks"}
    assert {n: kernels.default(n, "gpu") for n in kernels.KERNELS} == {
        "depthwise_conv": "lax", "probe_logits": "plain", "class_ce": "optax", "probe_fit": "vmap",
        "attention": "plain"}
    monkeypatch.setenv(kernels.ENV, "depthwise_conv=lax, probe_fit=vmap")
    assert kernels.choose("depthwise_conv") == "lax" and kernels.choose("class_ce") == "cpu_planes"
    with kernels.use(depthwise_conv="cpu_shifted"):
        assert kernels.choose("depthwise_conv") == "cpu_shifted" and kernels.choose("probe_fit") == "vmap"
    assert kernels.choose("depthwise_conv") == "lax"
    monkeypatch.setenv(kernels.ENV, "depthwise_conv=fast")
    with pytest.raises(ValueError, match="implementation of kernel 'depthwise_conv' 'fast'.*cpu_shifted, lax"):
        kernels.choose("depthwise_conv")
    with pytest.raises(ValueError, match="unknown kernel 'conv'"):
        kernels.use(conv="lax").__enter__()


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_conv_paths_agree_with_their_gradients(stride):
    conv = mobilenet_v2.DepthwiseConv(features=8, kernel=3, stride=stride)
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 8))
    params = conv.init(jax.random.key(1), x)

    def value_and_grads(params, x):
        return conv.apply(params, x), jax.grad(lambda p, x: jnp.sum(conv.apply(p, x) ** 2), (0, 1))(params, x)

    results = both("depthwise_conv", value_and_grads, params, x)
    assert results["lax"][0].shape == (2, 4 if stride == 2 else 7, 4 if stride == 2 else 7, 8)
    assert_close(results, atol=1e-5)


@pytest.mark.parametrize("name", ["probe_logits", "class_ce"])
def test_probe_loss_paths_agree_with_their_gradients(name):
    params = probes.init_probe(jax.random.key(0), "mlp", SALIENCY, 6, hidden=5)
    acts = jax.random.normal(jax.random.key(1), (3, 4, 4, 6))
    target = probes.prepare_targets(jax.random.uniform(jax.random.key(2), (3, 8, 8)) > 0.5, (4, 4), SALIENCY)

    def loss_and_grads(params, acts):
        return jax.value_and_grad(lambda p, a: probes.probe_loss(p, a, target, SALIENCY).sum(), (0, 1))(params, acts)

    assert_close(both(name, loss_and_grads, params, acts), atol=1e-6)


def test_chunked_fit_equals_one_stack(monkeypatch):
    """Probes fit a chunk at a time (here one per chunk) equal the stacked fit: each probe's updates depend only
    on itself and the shared image order."""
    x = jax.random.normal(jax.random.key(0), (10, 3, 6))
    y = jax.random.bernoulli(jax.random.key(1), 0.4, (10, 3))
    monkeypatch.setattr(fit, "CHUNK_BYTES", 1)
    assert fit.chunk_size("mlp", CONCEPT, 6, 4, 3) == 1
    results = both("probe_fit", lambda: fit.fit_group(x, y, CONCEPT, kind="mlp", hidden=4, epochs=2, batch_size=4),
                   jit=False)
    assert_close(results, atol=1e-6)


def test_attention_in_query_chunks_equals_one_call_with_its_gradients(monkeypatch):
    """Scores over the chunk budget run in the fewest equal query chunks under it (12 queries, 2 images x 2 heads x
    5 keys x 4 bytes = 80 bytes per query, 256 bytes allowed: 3 per chunk, 4 chunks); values and the gradients
    the intervention takes agree with one call."""
    q, k, v = (jax.random.normal(jax.random.key(i), (2, n, 2, 4)) for i, n in enumerate((12, 5, 5)))
    monkeypatch.setattr(layers, "ATTENTION_CHUNK_BYTES", 256)
    with kernels.use(attention="cpu_query_chunks"):
        jaxpr = str(jax.make_jaxpr(layers.attention)(q, k, v))
    assert "f32[4,2,3,2,4] = scan" in jaxpr  # 4 chunks of [B, 3 queries, H, D]

    def value_and_grads(q, k, v):
        return jax.value_and_grad(lambda *a: jnp.sum(jnp.sin(layers.attention(*a))), (0, 1, 2))(q, k, v)

    assert_close(both("attention", value_and_grads, q, k, v), atol=1e-6)
