"""Probe fitting on synthetic activations whose answer is known, and parity of the cheap losses with the paper's."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprobe.probing import fit, metrics, probes, ridge
from jaxprobe.probing.tasks import Task

N, H, W, C, F = 24, 4, 4, 8, 4  # images, token grid, channels, label/token factor (labels 16x16)
# The core knows no study: these tasks are built here (the scene study's saliency and depth have the same kinds).
SALIENCY = Task("saliency", "mask", ("dice", "iou"), headline="dice")
DEPTH = Task("depth", "dense", ("rmse", "spearman", "pearson"), headline="rmse")
LABEL = Task("has_object", "label", ("accuracy",), headline="accuracy")


def _synthetic(task, *, n=N, steps=2, signal=True, seed=0):
    """acts {layer: [n, steps, H, W, C]} whose channel 0 encodes the token-level label (plus noise), labels."""
    rng = np.random.default_rng(seed)
    if task == SALIENCY:
        tokens = (rng.random((n, H, W)) < 0.4).astype(np.float32)
        code = 2.0 * (tokens - 0.5)
        labels = np.repeat(np.repeat(tokens > 0, F, 1), F, 2)
    else:
        tokens = rng.normal(size=(n, H, W)).astype(np.float32)
        code = tokens
        labels = np.repeat(np.repeat(tokens, F, 1), F, 2) + 0.1 * rng.normal(size=(n, H * F, W * F))
    acts = 0.5 * rng.normal(size=(n, steps, H, W, C)).astype(np.float32)
    if signal:
        acts[..., 0] += code[:, None]
    return {"layer_a": jnp.asarray(acts)}, jnp.asarray(labels, jnp.float32 if task == DEPTH else bool)


def _mean_scores(scores, metric):
    return {pid: float(s[metric].mean()) for pid, s in scores.items()}


def test_linear_saliency_probe_learns_the_mask_and_controls_do_not():
    acts, labels = _synthetic(SALIENCY)
    fitted = fit.fit_sweep(acts, labels, SALIENCY)  # the paper's defaults
    dice = _mean_scores(probes.evaluate_sweep(fitted, acts, labels, SALIENCY), "dice")
    assert set(dice) == {("layer_a", 0), ("layer_a", 1)}
    assert min(dice.values()) > 0.9, dice
    shuffled = labels[np.random.default_rng(1).permutation(N)]
    ctrl = fit.fit_sweep(acts, shuffled, SALIENCY)
    assert max(_mean_scores(probes.evaluate_sweep(ctrl, acts, shuffled, SALIENCY), "dice").values()) < 0.7
    noise, _ = _synthetic(SALIENCY, signal=False)
    ctrl = fit.fit_sweep(noise, labels, SALIENCY)
    assert max(_mean_scores(probes.evaluate_sweep(ctrl, noise, labels, SALIENCY), "dice").values()) < 0.7
    mask = probes.predict(fitted[("layer_a", 0)], acts["layer_a"][:, 0], (H * F, W * F))
    assert mask.shape == (N, H * F, W * F) and mask.dtype == jnp.bool_


@pytest.mark.parametrize("kind,label_mode", [("mlp", "upsample"), ("linear", "downsample")])
def test_other_probe_kinds_and_label_modes_learn(kind, label_mode):
    acts, labels = _synthetic(SALIENCY, steps=1)
    fitted = fit.fit_sweep(acts, labels, SALIENCY, kind=kind, label_mode=label_mode, hidden=16, epochs=10,
                              lr=1e-2)
    assert min(_mean_scores(probes.evaluate_sweep(fitted, acts, labels, SALIENCY), "dice").values()) > 0.9


def test_depth_probe_learns():
    acts, labels = _synthetic(DEPTH, steps=1)
    fitted = fit.fit_sweep(acts, labels, DEPTH, lr=1e-2, epochs=10)
    scores = probes.evaluate_sweep(fitted, acts, labels, DEPTH)[("layer_a", 0)]
    assert set(scores) == {"rmse", "spearman", "pearson"}
    # z-scored-like labels (std ~1): predicting 0 gives RMSE ~1; the best linear read-out of channel 0 ~0.46.
    assert scores["rmse"].mean() < 0.6 and scores["spearman"].mean() > 0.8 and scores["pearson"].mean() > 0.8


def test_group_fit_equals_fitting_each_probe_alone():
    acts, labels = _synthetic(SALIENCY, n=10, steps=3)  # 10 images: the last batch of 4 is partial
    x = acts["layer_a"]
    keys = jax.random.split(jax.random.key(3), 3)  # the MLP: random init, so the keys must follow the probe
    group = fit.fit_group(x, labels, SALIENCY, kind="mlp", hidden=8, epochs=3, keys=keys)
    for g in range(3):
        alone = fit.fit_group(x[:, g:g + 1], labels, SALIENCY, kind="mlp", hidden=8, epochs=3,
                                 keys=keys[g:g + 1])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[g], b[0], atol=1e-5), group, alone)


def test_per_probe_labels_equal_fitting_each_probe_alone_on_its_labels():
    """[N, G, H, W] labels: probe g reads label map g (the concept study: one concept per probe)."""
    acts, labels = _synthetic(SALIENCY, n=10, steps=3)
    x = acts["layer_a"]
    per_probe = jnp.stack([labels, ~labels, labels[::-1]], axis=1)  # [N, 3, H, W], three different targets
    group = fit.fit_group(x, per_probe, SALIENCY, kind="affine", epochs=3)
    assert set(group) == {"kernel", "bias"}
    for g in range(3):
        alone = fit.fit_group(x[:, g:g + 1], per_probe[:, g], SALIENCY, kind="affine", epochs=3)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[g], b[0], atol=1e-5), group, alone)
    assert not np.allclose(group["kernel"][0], group["kernel"][1])
    with pytest.raises(ValueError, match="2 label sets for a group of 3 probes"):
        fit.fit_group(x, per_probe[:, :2], SALIENCY)


def test_partial_batch_is_the_mean_over_its_real_images():
    """One epoch with batch_size > N is one Adam step on the mean loss over the N images (padding masked)."""
    acts, labels = _synthetic(DEPTH, n=6, steps=1)
    x = acts["layer_a"]
    fitted = fit.fit_group(x, labels, DEPTH, epochs=1, batch_size=8, lr=0.1)
    params = probes.init_probe(None, "linear", DEPTH, C)
    target = probes.prepare_targets(labels, (H, W), DEPTH)
    grads = jax.grad(lambda p: probes.probe_loss(p, x[:, 0], target, DEPTH).mean())(params)
    opt = optax.adam(0.1)
    updates, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(fitted["kernel"][0], optax.apply_updates(params, updates)["kernel"], atol=1e-6)


def _random_probe_case(seed=0, hw=(3, 2), f=(2, 3)):
    """Random activations [B, h, w, C], pixel labels NOT aligned with token blocks, and a random linear probe."""
    rng = np.random.default_rng(seed)
    acts = jnp.asarray(rng.normal(size=(5, *hw, C)), jnp.float32)
    out_hw = (hw[0] * f[0], hw[1] * f[1])
    mask = jnp.asarray(rng.random((5, *out_hw)) < 0.5)
    depth = jnp.asarray(rng.normal(scale=2.0, size=(5, *out_hw)), jnp.float32)  # large: both Huber branches
    return acts, mask, depth, f


def test_count_ce_equals_upsampled_ce_and_gradient():
    acts, mask, _, f = _random_probe_case()
    params = {"kernel": jnp.asarray(np.random.default_rng(1).normal(size=(C, 2)), jnp.float32)}

    def explicit(p):  # the paper: nearest-upsample the logits, CE at every label pixel
        up = jnp.repeat(jnp.repeat(probes.apply_probe(p, acts), f[0], 1), f[1], 2)
        return optax.softmax_cross_entropy_with_integer_labels(up, mask.astype(jnp.int32)).mean(axis=(1, 2))

    target = probes.prepare_targets(mask, acts.shape[1:3], SALIENCY)

    def cheap(p):
        return probes.probe_loss(p, acts, target, SALIENCY)

    np.testing.assert_allclose(cheap(params), explicit(params), rtol=1e-5)
    g_cheap = jax.grad(lambda p: cheap(p).mean())(params)["kernel"]
    g_explicit = jax.grad(lambda p: explicit(p).mean())(params)["kernel"]
    np.testing.assert_allclose(g_cheap, g_explicit, rtol=1e-5, atol=1e-7)


def test_block_huber_equals_upsampled_huber_and_gradient():
    acts, _, depth, f = _random_probe_case()
    params = {"kernel": jnp.asarray(np.random.default_rng(2).normal(size=(C, 1)), jnp.float32)}

    def explicit(p):
        up = jnp.repeat(jnp.repeat(probes.apply_probe(p, acts)[..., 0], f[0], 1), f[1], 2)
        return optax.huber_loss(up, depth, delta=1.0).mean(axis=(1, 2))

    target = probes.prepare_targets(depth, acts.shape[1:3], DEPTH)

    def cheap(p):
        return probes.probe_loss(p, acts, target, DEPTH)

    np.testing.assert_allclose(cheap(params), explicit(params), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(lambda p: cheap(p).mean())(params)["kernel"],
                               jax.grad(lambda p: explicit(p).mean())(params)["kernel"], rtol=1e-5, atol=1e-7)


def test_downsample_targets():
    labels = jnp.asarray([[[1, 1, 0, 0], [1, 0, 0, 0]]], bool)  # one image 2x4, token grid 1x2: fh=2, fw=2
    sal = probes.prepare_targets(labels, (1, 2), SALIENCY, "downsample")
    np.testing.assert_array_equal(sal[0, 0, :, 1], [1.0, 0.0])  # 3/4 salient -> salient; 0/4 -> background
    depth = jnp.asarray([[[1.0, 2.0, 5.0, 5.0], [3.0, 4.0, 5.0, 7.0]]])
    np.testing.assert_allclose(probes.prepare_targets(depth, (1, 2), DEPTH, "downsample").reshape(-1), [2.5, 5.5])


def _np_ridge(acts, labels, task, lam, hw):
    """Reference: stack every token of every image, solve the normal equations in float64."""
    x = np.asarray(acts, np.float64).reshape(-1, acts.shape[-1])
    lab = np.asarray(labels, np.float64).reshape(len(labels), hw[0], labels.shape[1] // hw[0], hw[1], -1)
    y = (lab > 0).mean(axis=(2, 4)) - 0.5 if task == SALIENCY else lab.mean(axis=(2, 4))
    y = y.reshape(-1)
    a, b = x.T @ x / len(y), x.T @ y / len(y)
    return np.linalg.solve(a + lam * np.trace(a) / len(a) * np.eye(len(a)), b), x, y


@pytest.mark.parametrize("task", [SALIENCY, DEPTH])
def test_ridge_matches_numpy_solve(task):
    acts, labels = _synthetic(task, steps=2)
    acts["layer_b"] = jnp.asarray(np.random.default_rng(5).normal(size=(N, 1, 2, 2, 4)), jnp.float32)
    accs = None
    for i in range(0, N, 5):  # streamed in uneven batches
        accs = ridge.accumulate_ridge(accs, {k: v[i:i + 5] for k, v in acts.items()}, labels[i:i + 5], task)
    assert set(accs) == {(H, W, C), (2, 2, 4)}
    lambdas = jnp.asarray([1e-3, 1.0])
    for ids, acc in accs.values():
        w = ridge.ridge_solve(acc, lambdas)
        for g, (layer, step) in enumerate(ids):
            for li, lam in enumerate(np.asarray(lambdas)):
                ref, x, y = _np_ridge(acts[layer][:, step], labels, task, lam, acts[layer].shape[2:4])
                np.testing.assert_allclose(w[li, g], ref, rtol=1e-4, atol=1e-6)
                mse = np.mean((x @ np.asarray(w[li, g], np.float64) - y) ** 2)
                np.testing.assert_allclose(ridge.ridge_mse(acc, w)[li, g], mse, rtol=1e-4)


def test_ridge_sweep_picks_lambda_by_validation_and_decodes_saliency():
    acts, labels = _synthetic(SALIENCY)
    val_acts, val_labels = _synthetic(SALIENCY, seed=7)
    lambdas = (1e-4, 1e-2, 1.0, 100.0)
    fitted, chosen = ridge.fit_ridge_sweep(acts, labels, SALIENCY, lambdas=lambdas, val=(val_acts, val_labels))
    for pid in fitted:
        layer, step = pid
        val_mse = []
        for lam in lambdas:
            w, _, _ = _np_ridge(acts[layer][:, step], labels, SALIENCY, lam, (H, W))
            _, xv, yv = _np_ridge(val_acts[layer][:, step], val_labels, SALIENCY, lam, (H, W))
            val_mse.append(np.mean((xv @ w - yv) ** 2))
        assert chosen[pid] == pytest.approx(lambdas[int(np.argmin(val_mse))])
    dice = _mean_scores(probes.evaluate_sweep(fitted, val_acts, val_labels, SALIENCY), "dice")
    assert min(dice.values()) > 0.9, dice
    _, chosen_split = ridge.fit_ridge_sweep(acts, labels, SALIENCY, lambdas=lambdas)  # internal val split
    assert set(chosen_split) == set(fitted)


@pytest.mark.slow  # kill-and-resume
def test_checkpoint_resume_is_bit_identical(tmp_path):
    acts, labels = _synthetic(SALIENCY, n=10, steps=2)
    kw = dict(kind="mlp", hidden=8, epochs=3)
    straight = fit.fit_group(acts["layer_a"], labels, SALIENCY, **kw)
    partial = fit.fit_group(acts["layer_a"], labels, SALIENCY, checkpoint_dir=tmp_path, stop_after_epoch=1,
                               **kw)
    assert not all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), straight, partial)))
    resumed = fit.fit_group(acts["layer_a"], labels, SALIENCY, checkpoint_dir=tmp_path, **kw)
    jax.tree.map(np.testing.assert_array_equal, straight, resumed)


def test_bad_inputs_raise_clear_errors():
    acts, labels = _synthetic(SALIENCY, n=6, steps=1)
    with pytest.raises(TypeError, match="expected a probing.tasks.Task, got str 'saliency'"):
        fit.fit_sweep(acts, labels, "saliency")  # a name is not a task: the core has no registry to look it up
    with pytest.raises(ValueError, match="unknown task kind 'normals'; valid choices: mask, dense, label"):
        Task("normals", "normals", ("rmse",), headline="rmse")
    with pytest.raises(ValueError, match="labels of task 'has_object' must be \\[N\\] \\(one label per image\\)"):
        fit.fit_sweep({"f": jnp.zeros((6, 1, C))}, labels, LABEL)
    with pytest.raises(ValueError, match="activations of layer 'layer_a' must be \\[N, S, D\\]"):
        fit.fit_sweep(acts, jnp.zeros(6, bool), LABEL)
    with pytest.raises(ValueError, match="ridge probes fit spatial tasks"):
        ridge.fit_ridge_sweep({"f": jnp.zeros((6, 1, C))}, jnp.zeros(6, bool), LABEL)
    with pytest.raises(ValueError, match="linear, affine, mlp"):
        fit.fit_sweep(acts, labels, SALIENCY, kind="conv")
    with pytest.raises(ValueError, match="upsample, downsample"):
        fit.fit_sweep(acts, labels, SALIENCY, label_mode="bilinear")
    with pytest.raises(ValueError, match=r"\(6, 10, 10\).*layer_a.*\(6, 1, 4, 4, 8\)"):
        fit.fit_sweep(acts, jnp.zeros((6, 10, 10), bool), SALIENCY)
    with pytest.raises(ValueError, match="hold 6 images but the labels hold 5"):
        fit.fit_sweep(acts, labels[:5], SALIENCY)
    with pytest.raises(ValueError, match="empty split"):
        fit.fit_sweep({k: v[:0] for k, v in acts.items()}, labels[:0], SALIENCY)
    with pytest.raises(ValueError, match="empty split"):
        ridge.fit_ridge_sweep(acts, labels, SALIENCY, val_fraction=0.01)
    bad = {"clean": acts["layer_a"], "down_blocks_1/attn1": acts["layer_a"].at[2, 0, 1, 1, 3].set(jnp.nan)}
    with pytest.raises(ValueError, match="'down_blocks_1/attn1' contain NaN"):
        fit.fit_sweep(bad, labels, SALIENCY)
    with pytest.raises(ValueError, match="linear, affine, mlp"):
        probes.init_probe(jax.random.key(0), "transformer", DEPTH, C)


def _image_level(n=N, steps=2, d=C, seed=0, signal=True):
    """Feature vectors {layer: [n, steps, d]} whose feature 0 encodes a binary label per image, and the labels [n]."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    x = 0.5 * rng.normal(size=(n, steps, d)).astype(np.float32)
    if signal:
        x[..., 0] += 2.0 * (labels[:, None] - 0.5)
    return {"features": jnp.asarray(x)}, jnp.asarray(labels)


def test_image_level_probe_learns_the_label_and_controls_do_not():
    acts, labels = _image_level()
    fitted = fit.fit_sweep(acts, labels, LABEL, kind="affine", lr=1e-2, epochs=10)
    scores = probes.evaluate_sweep(fitted, acts, labels, LABEL)
    assert set(scores) == {("features", 0), ("features", 1)}
    assert all(s["accuracy"].shape == (N,) for s in scores.values())
    assert min(_mean_scores(scores, "accuracy").values()) > 0.9
    noise, _ = _image_level(signal=False)
    ctrl = fit.fit_sweep(noise, labels, LABEL, kind="affine", lr=1e-2, epochs=10)
    # chance is the majority class (~0.6); without signal a probe stays near it
    assert max(_mean_scores(probes.evaluate_sweep(ctrl, noise, labels, LABEL), "accuracy").values()) < 0.85
    pred = probes.predict(fitted[("features", 0)], acts["features"][:, 0])
    assert pred.shape == (N,) and pred.dtype == jnp.bool_


@pytest.mark.parametrize("kind", ["affine", "mlp"])
def test_image_level_fit_equals_a_one_token_mask_fit(kind):
    """An image label is a 1x1 mask read from a 1x1 token grid: the two fits give the same probes."""
    acts, labels = _image_level(n=10, steps=3)
    x = acts["features"]
    per_probe = jnp.stack([labels, ~labels, labels[::-1]], axis=1)  # [N, G]: one label set per probe
    kw = dict(kind=kind, hidden=8, epochs=3, lr=1e-2)
    image = fit.fit_group(x, per_probe, LABEL, **kw)
    grid = fit.fit_group(x[:, :, None, None], per_probe[:, :, None, None], SALIENCY, **kw)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), image, grid)


@pytest.mark.parametrize("task", [SALIENCY, DEPTH, LABEL])
def test_group_evaluation_equals_scoring_each_probe_alone(task, monkeypatch):
    """`evaluate_group` scores G stacked probes in one vmapped call, `evaluate_sweep` a chunk at a time: the same
    per-image scores as predicting and scoring one probe at a time, whatever the chunk size."""
    if task.spatial:
        acts, labels = _synthetic(task, n=6, steps=3)
    else:
        acts, labels = _image_level(n=6, steps=3)
    (layer, x), = acts.items()
    fitted = fit.fit_sweep(acts, labels, task, kind="affine", epochs=2, lr=1e-2)
    truth = np.asarray(labels) if task.kind == "dense" else np.asarray(labels) > 0
    out_hw = tuple(labels.shape[1:]) if task.spatial else None
    axis = (-2, -1) if task.spatial else ()
    alone = {}
    for pid, params in fitted.items():
        pred = np.asarray(probes.predict(params, x[:, pid[1]], out_hw))
        alone[pid] = {m: getattr(metrics, m)(pred, truth, axis=axis) for m in task.metrics}
    stacked = jax.tree.map(lambda *p: jnp.stack(p), *fitted.values())
    group = probes.evaluate_group(stacked, x, labels, task)
    for budget in (probes.EVAL_BYTES, 1):  # all three probes at once; one probe per chunk
        monkeypatch.setattr(probes, "EVAL_BYTES", budget)
        swept = probes.evaluate_sweep(fitted, acts, labels, task)
        assert list(swept) == list(fitted)
        for g, pid in enumerate(fitted):
            for m in task.metrics:
                np.testing.assert_allclose(group[m][g], alone[pid][m], rtol=1e-6, atol=1e-7)
                np.testing.assert_allclose(swept[pid][m], group[m][g], rtol=1e-12)  # float64 scores
    per_probe = jnp.stack([labels, labels[::-1], labels], axis=1)  # [N, G, ...]: probe g against label set g
    got = probes.evaluate_group(stacked, x, per_probe, task)
    for m in task.metrics:
        np.testing.assert_allclose(got[m][0], group[m][0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got[m][2], group[m][2], rtol=1e-6, atol=1e-7)
    flipped = probes.evaluate_group(jax.tree.map(lambda p: p[1:2], stacked), x[:, 1:2], labels[::-1], task)
    for m in task.metrics:
        np.testing.assert_allclose(got[m][1], flipped[m][0], rtol=1e-6, atol=1e-7)


class ProbeFunctionsTest(chex.TestCase):
    """The core's pure probe functions give the same results traced under jit as run eagerly."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_count_ce_and_block_huber_equal_the_upsampled_losses(self):
        acts, mask, depth, f = _random_probe_case()
        rng = np.random.default_rng(3)
        for task, labels, out in ((SALIENCY, mask, 2), (DEPTH, depth, 1)):
            params = {"kernel": jnp.asarray(rng.normal(size=(C, out)), jnp.float32)}
            target = probes.prepare_targets(labels, acts.shape[1:3], task)
            cheap = self.variant(lambda p, a, t, task=task: probes.probe_loss(p, a, t, task))(params, acts, target)
            up = jnp.repeat(jnp.repeat(probes.apply_probe(params, acts), f[0], 1), f[1], 2)
            if task is SALIENCY:
                explicit = optax.softmax_cross_entropy_with_integer_labels(up, labels.astype(jnp.int32))
            else:
                explicit = optax.huber_loss(up[..., 0], labels, delta=1.0)
            np.testing.assert_allclose(cheap, explicit.mean(axis=(1, 2)), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_image_level_loss_is_the_cross_entropy_of_the_label(self):
        rng = np.random.default_rng(4)
        x = jnp.asarray(rng.normal(size=(5, C)), jnp.float32)
        y = jnp.asarray([True, False, True, True, False])
        params = {"kernel": jnp.asarray(rng.normal(size=(C, 2)), jnp.float32), "bias": jnp.asarray([0.3, -0.1])}
        target = probes.prepare_targets(y, None, LABEL)
        got = self.variant(lambda p, a, t: probes.probe_loss(p, a, t, LABEL))(params, x, target)
        want = optax.softmax_cross_entropy_with_integer_labels(x @ params["kernel"] + params["bias"], y.astype(int))
        np.testing.assert_allclose(got, want, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_a_probe_of_another_width_fails_at_its_input(self):
        params = probes.init_probe(jax.random.key(0), "mlp", DEPTH, C, hidden=4)
        with pytest.raises(AssertionError, match="dimension equal to '8' on axis '-1' but got '9'"):
            self.variant(probes.apply_probe)(params, jnp.zeros((2, 3, C + 1)))
        target = probes.prepare_targets(jnp.zeros((2, 6, 6)), (3, 3), DEPTH)
        with pytest.raises(AssertionError):  # targets of another token grid than the activations'
            self.variant(lambda p, a, t: probes.probe_loss(p, a, t, DEPTH))(params, jnp.zeros((2, 2, 2, C)), target)


def test_mask_probes_score_ap_on_the_probability_and_keep_their_classes():
    """With a ranking metric the mask probes' class predictions stay `predict`'s argmax (Dice, IoU unchanged), and
    'ap' scores the positive class's probability, upsampled as the classes are."""
    ranked = Task("saliency", "mask", ("dice", "iou", "ap"), headline="dice")
    acts, labels = _synthetic(SALIENCY, n=6, steps=3)
    (layer, x), = acts.items()
    rng = np.random.default_rng(5)
    stacked = {"kernel": jnp.asarray(rng.normal(size=(3, C, 2)), jnp.float32)}
    got = probes.evaluate_group(stacked, x, labels, ranked)
    plain = probes.evaluate_group(stacked, x, labels, SALIENCY)
    truth = np.asarray(labels)
    for g in range(3):
        params = {"kernel": stacked["kernel"][g]}
        pred = np.asarray(probes.predict(params, x[:, g], truth.shape[1:]))
        prob = np.asarray(probes.positive_probability(params, x[:, g], truth.shape[1:]))
        np.testing.assert_array_equal(pred, prob > 0.5)
        for m in ("dice", "iou"):
            np.testing.assert_array_equal(got[m][g], plain[m][g])
            np.testing.assert_array_equal(got[m][g], getattr(metrics, m)(pred, truth))
        np.testing.assert_allclose(got["ap"][g], metrics.average_precision(prob, truth), rtol=1e-12)
    with pytest.raises(ValueError, match="ranks the pixels of a mask"):
        Task("depth", "dense", ("rmse", "ap"), headline="rmse")
