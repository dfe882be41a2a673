"""The PyTorch paper references the benchmarks time jaxprobe against, written as the papers' code does it (eager,
one probe or one image at a time). tests/benchmarks/test_references.py checks that each computes what jaxprobe
computes, so a speed-up is measured against the same work. torch and diffusers are imported inside."""
from __future__ import annotations

GUIDANCE = 7.5


def probe_loss(linear, x, y):
    """The paper's probe loss: per-token logits of `linear` on x [B, h, w, C], nearest-upsampled to the labels
    y [B, H, W] (int64), cross-entropy averaged over the batch's label pixels."""
    import torch.nn.functional as F

    logits = F.interpolate(linear(x).permute(0, 3, 1, 2), size=y.shape[1:], mode="nearest")
    return F.cross_entropy(logits, y)


def probe_loop(acts, labels, epochs: int, batch_size: int) -> list:
    """The paper's way: one nn.Linear probe at a time (acts: [N, h, w, C] per probe), `probe_loss`, Adam 1e-3.
    Returns the trained probes."""
    import torch

    y = torch.from_numpy(labels.astype("int64"))
    trained = []
    for x in acts:
        x = torch.from_numpy(x)
        lin = torch.nn.Linear(x.shape[-1], 2, bias=False)
        opt = torch.optim.Adam(lin.parameters(), 1e-3)
        for _ in range(epochs):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), batch_size):
                b = perm[i:i + batch_size]
                loss = probe_loss(lin, x[b], y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        trained.append(lin)
    return trained


def optimise_activation(probe, rep, target, hw, *, lr: float, iterations: int):
    """The paper's edit (its depth_intervention_utils.py): a clone of the activation rep [B, T, C] is optimised with
    Adam against the frozen probe (logits on the h x w token grid `hw`, nearest-upsampled to the target [B, H, W],
    cross-entropy) and returned. Each image's loss is its own mean, so the batch edits like the paper's batch of 1
    (and like jaxprobe's `intervene.optimise_activation`)."""
    import torch
    import torch.nn.functional as F

    b, (h, w) = len(rep), hw
    rep = rep.detach().clone().float().requires_grad_(True)
    optimizer = torch.optim.Adam([rep], lr=lr)
    with torch.enable_grad():
        for _ in range(iterations):
            optimizer.zero_grad()
            logits = F.interpolate(probe(rep).view(b, h, w, -1).permute(0, 3, 1, 2), size=target.shape[-2:],
                                   mode="nearest")
            loss = F.cross_entropy(logits, target, reduction="none").mean((1, 2)).sum()
            loss.backward()
            optimizer.step()
    return rep.detach()


def edit_hook(probe, target, b: int, latent_hw, *, lr: float, iterations: int):
    """`optimise_activation` as a forward hook on a UNet submodule: the output's conditional half (the last `b`
    rows) is edited and swapped in."""
    import math

    import torch

    def hook(module, inputs, out):
        stride = math.isqrt(latent_hw[0] * latent_hw[1] // out.shape[1])
        hw = (latent_hw[0] // stride, latent_hw[1] // stride)
        rep = optimise_activation(probe, out[-b:], target, hw, lr=lr, iterations=iterations)
        return torch.cat([out[:-b], rep.to(out.dtype)])

    return hook


def intervene(torch_pipe, prompts, noise_t, edits, target, *, num_steps: int, lr: float, iterations: int):
    """The paper's sampling loop with edits (its generate_image_with_modified_internal_rep), batched: diffusers'
    UNet called step by step under no_grad, CFG with the unconditional half first, and at a step of `edits`
    ({step: {torch module name: probe}}) the edit hooks registered for that call only.
    Returns (final latents [B, h, w, c], uint8 images [B, H, W, 3])."""
    import diffusers
    import torch

    tokenizer, b = torch_pipe.tokenizer, len(prompts)
    target = torch.from_numpy(target.astype("int64"))
    with torch.no_grad():
        ids = [tokenizer(p, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids for p in ([""] * b, list(prompts))]
        context = torch.cat([torch_pipe.text_encoder(i)[0] for i in ids])
        scheduler = diffusers.LMSDiscreteScheduler.from_config(torch_pipe.scheduler.config)
        scheduler.set_timesteps(num_steps)
        lat = noise_t * scheduler.init_noise_sigma
        for j, t in enumerate(scheduler.timesteps):
            handles = [torch_pipe.unet.get_submodule(name).register_forward_hook(
                edit_hook(probe, target, b, lat.shape[-2:], lr=lr, iterations=iterations))
                for name, probe in edits.get(j, {}).items()]
            try:
                lat_in = scheduler.scale_model_input(torch.cat([lat, lat]), t)
                uncond, cond = torch_pipe.unet(lat_in, t, encoder_hidden_states=context).sample.chunk(2)
            finally:
                for handle in handles:
                    handle.remove()
            lat = scheduler.step(uncond + GUIDANCE * (cond - uncond), t, lat).prev_sample
        image = torch_pipe.vae.decode(lat / torch_pipe.vae.config.scaling_factor).sample
    images = ((image / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return lat.permute(0, 2, 3, 1).numpy(), images.permute(0, 2, 3, 1).numpy()


def linear_probes(probe_set) -> dict:
    """{step: {torch module name: frozen nn.Linear(C, 2, bias=False)}} with the weights of jaxprobe's probes."""
    from jaxprobe.models import convert

    out = {}
    for (layer, step), params in probe_set.probes.items():
        if set(params) != {"kernel"}:
            raise ValueError(f"expected a linear probe {{'kernel'}} without bias, got {sorted(params)}")
        out.setdefault(step, {})[convert.path_to_torch_key(tuple(layer.split("/")))] = linear(params["kernel"])
    return out


def linear(kernel):
    """A frozen nn.Linear(C, out, bias=False) holding a jaxprobe linear probe's kernel [C, out]."""
    import torch

    weight = torch.from_numpy(kernel.T.copy())  # jax [C, out] -> torch weight [out, C]
    module = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False).requires_grad_(False)
    module.weight.copy_(weight)
    return module


def concept_net(kind: str, width: int, hidden: int):
    """A concept probe as a hook-script sweep builds it: Linear(D, 2) ('affine') or Linear(D, hidden)-ReLU-Linear."""
    import torch

    if kind == "affine":
        return torch.nn.Linear(width, 2)
    return torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))


def concept_probes(inputs, kind: str, *, hidden: int, epochs: int, batch_size: int, lr: float) -> list:
    """One PyTorch probe at a time, as a hook-script sweep would: `concept_net`, CE, Adam.
    `inputs`: [(x_train [n, D] float32, y_train [n] bool)] per probe. Returns the trained probes."""
    import torch
    import torch.nn.functional as F

    trained = []
    for x, y in inputs:
        x, y = torch.from_numpy(x), torch.from_numpy(y.astype("int64"))
        net = concept_net(kind, x.shape[1], hidden)
        opt = torch.optim.Adam(net.parameters(), lr)
        for _ in range(epochs):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), batch_size):
                b = perm[i:i + batch_size]
                loss = F.cross_entropy(net(x[b]), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        trained.append(net)
    return trained
