"""The PyTorch paper references of benchmarks/references.py compute what jaxprobe computes, so the benchmarks time
the same work on both sides: the same probe loss and gradient, the same Adam step of a probe or of an edited
activation, on tiny problems (torch on 1 thread, conftest)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from benchmarks import references
from jaxprobe.concepts.sweep import CONCEPT
from jaxprobe.probing import probes
from jaxprobe.scene import intervene
from jaxprobe.scene.tasks import SALIENCY

B, H, W, C = 3, 4, 4, 8  # a 4x4 token grid of 8 channels, labels at 16x16
LABEL_HW = (16, 16)


def saliency_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, H, W, C)).astype(np.float32)
    labels = rng.random((B, *LABEL_HW)) < 0.4
    return x, labels


def adam_step(params, grads, lr):
    """One optax Adam step from a fresh state: what jaxprobe's fits and edits apply."""
    optimizer = optax.adam(lr)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return optax.apply_updates(params, updates)


def test_probe_loss_and_gradient_equal_jaxprobes_per_token_loss():
    x, labels = saliency_problem()
    kernel = np.random.default_rng(1).normal(size=(C, 2)).astype(np.float32)
    target = probes.prepare_targets(labels, (H, W), SALIENCY)
    loss = lambda k: probes.probe_loss({"kernel": k}, jnp.asarray(x), target, SALIENCY).mean()
    value, grad = jax.value_and_grad(loss)(jnp.asarray(kernel))

    linear = torch.nn.Linear(C, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
    ref = references.probe_loss(linear, torch.from_numpy(x), torch.from_numpy(labels.astype("int64")))
    ref.backward()
    np.testing.assert_allclose(ref.item(), float(value), rtol=1e-5)
    np.testing.assert_allclose(linear.weight.grad.numpy().T, np.asarray(grad), rtol=1e-4, atol=1e-7)


def test_probe_loop_takes_jaxprobes_adam_step():
    """One epoch over one full batch is one Adam step from the loop's own init: jaxprobe's loss gradient and optax's
    Adam give the same weights."""
    x, labels = saliency_problem(2)
    torch.manual_seed(0)
    (trained,) = references.probe_loop([x], labels, epochs=1, batch_size=B)
    torch.manual_seed(0)
    init = torch.nn.Linear(C, 2, bias=False).weight.detach().numpy().T.copy()  # the loop's first draw

    target = probes.prepare_targets(labels, (H, W), SALIENCY)
    loss = lambda p: probes.probe_loss(p, jnp.asarray(x), target, SALIENCY).mean()
    params = {"kernel": jnp.asarray(init)}
    expected = adam_step(params, jax.grad(loss)(params), 1e-3)["kernel"]
    assert np.abs(np.asarray(expected) - init).max() > 5e-4  # the step moved the weights
    np.testing.assert_allclose(trained.weight.detach().numpy().T, np.asarray(expected), atol=1e-6)


@pytest.mark.parametrize("iterations", [1, 3])
def test_edited_activation_equals_jaxprobes_optimise_activation(iterations):
    x, labels = saliency_problem(3)
    kernel = (np.random.default_rng(4).normal(size=(C, 2)) / np.sqrt(C)).astype(np.float32)
    target = probes.prepare_targets(labels, (H, W), SALIENCY)
    ours = intervene.optimise_activation({"kernel": jnp.asarray(kernel)}, jnp.asarray(x), target, SALIENCY,
                                         lr=5e-3, iterations=iterations)

    rep = torch.from_numpy(x.reshape(B, H * W, C))
    theirs = references.optimise_activation(references.linear(kernel), rep, torch.from_numpy(labels.astype("int64")),
                                            (H, W), lr=5e-3, iterations=iterations)
    assert np.abs(np.asarray(ours) - x).max() > 0.5 * 5e-3 * iterations  # it moved
    np.testing.assert_allclose(theirs.numpy().reshape(B, H, W, C), np.asarray(ours), atol=1e-5)


def test_edit_hook_edits_the_conditional_half_only():
    """The hook finds the token grid from the latent size, edits the last `b` rows as `optimise_activation` does
    and passes the unconditional rows through."""
    x, labels = saliency_problem(5)
    uncond = np.random.default_rng(6).normal(size=(B, H * W, C)).astype(np.float32)
    out = torch.from_numpy(np.concatenate([uncond, x.reshape(B, H * W, C)]))
    probe, target = references.linear(np.ones((C, 2), np.float32)), torch.from_numpy(labels.astype("int64"))
    hook = references.edit_hook(probe, target, B, (2 * H, 2 * W), lr=5e-3, iterations=2)  # stride 2 layer
    edited = hook(None, (), out)
    expected = references.optimise_activation(probe, out[B:], target, (H, W), lr=5e-3, iterations=2)
    np.testing.assert_array_equal(edited[:B].numpy(), uncond)
    np.testing.assert_array_equal(edited[B:].numpy(), expected.numpy())


def jax_params(net, kind):
    """jaxprobe's probe params ('affine' or 'mlp' layout of `probes.init_probe`) holding the torch net's weights."""
    t = lambda p: jnp.asarray(p.detach().numpy().T.copy())
    if kind == "affine":
        return {"kernel": t(net.weight), "bias": t(net.bias)}
    return {"hidden": {"kernel": t(net[0].weight), "bias": t(net[0].bias)},
            "out": {"kernel": t(net[2].weight), "bias": t(net[2].bias)}}


@pytest.mark.parametrize("kind", ["affine", "mlp"])
def test_concept_probes_take_jaxprobes_adam_step(kind):
    """One epoch over one full batch of the per-probe concept loop = one optax Adam step on jaxprobe's image-level
    probe loss, from the loop's own init."""
    n, width, hidden, lr = 12, 6, 5, 1e-2
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(n, width)).astype(np.float32), rng.random(n) < 0.5
    torch.manual_seed(0)
    (trained,) = references.concept_probes([(x, y)], kind, hidden=hidden, epochs=1, batch_size=n, lr=lr)
    torch.manual_seed(0)
    params = jax_params(references.concept_net(kind, width, hidden), kind)

    target = probes.prepare_targets(y, None, CONCEPT)  # one label per image, as the concept sweep fits it
    loss = lambda p: probes.probe_loss(p, jnp.asarray(x), target, CONCEPT).mean()
    expected = adam_step(params, jax.grad(loss)(params), lr)
    got = jax_params(trained, kind)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got, expected)
    assert max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), expected, params))) > lr / 2
