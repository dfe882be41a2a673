"""Write tests/models/golden/mobilenet_v2_*.safetensors: torchvision MobileNetV2 outputs for the Flax parity test.

torchvision cannot be imported in the project environment, so this runs in a scratch venv (outside the repo):

    python3 -m venv /work/exp/tv-venv
    /work/exp/tv-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 safetensors numpy
    /work/exp/tv-venv/bin/python tests/make_mobilenet_v2_golden.py    # from the repository root

(generated with torch 2.14.1, torchvision 0.29.1, safetensors 0.8.0, numpy 2.4.6, on CPU).

Each case builds `torchvision.models.mobilenet_v2(width_mult=..., num_classes=...)` with seeded random weights,
calibrates real batch-norm running statistics on random batches (then jitters them and the BN affine parameters so
no layer is near the identity), and runs seeded random images in eval mode. To keep the files small, every value
torch computes with is exactly representable in the file: weights (ndim >= 2) as int8 times a power-of-two scale
(`state.<key>` int8, `scale.<key>` float32 scalar), 1-D tensors as float16 (`state.<key>`), images as int8 times
2**-5. The file holds:

  state.<torch key> [, scale.<torch key>]   the state dict (num_batches_tracked left out)
  images_nhwc                                int8 [B, H, W, 3]; the images are its values times 2**-5 (torch ran
                                             on their NCHW transpose)
  logits                                     float32 [B, num_classes]
  features_<k>                               float32 NHWC outputs of torchvision `features[k]`
and metadata width_mult, num_classes, versions.
"""
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "models" / "golden"
# name -> (width_mult, num_classes, batch, height, width, seed, recorded features[k]). "small": the project's
# setting; "odd": a narrow model on odd, non-square images (stride-2 padding on odd sizes, where Flax 'SAME'
# would differ from PyTorch).
# Early, large feature maps are recorded for "odd" only: the files must stay under 1.5 MB together.
CASES = {"small": (0.5, 16, 2, 64, 64, 0, (2, 7, 14, 18)),
         "odd": (0.35, 10, 2, 49, 41, 1, (1, 2, 7, 14, 18))}
IMAGE_SCALE = 2.0 ** -5


def decode_state(tensors) -> dict:
    """`state.*` / `scale.*` entries of a golden file -> float32 torch-layout state dict (exact)."""
    state = {}
    for name, arr in tensors.items():
        if name.startswith("state."):
            key = name[len("state."):]
            scale = tensors.get("scale." + key)
            state[key] = arr.astype(np.float32) * (np.float32(1) if scale is None else scale.astype(np.float32))
    return state


def _pow2_scale(std: float) -> float:
    """Power-of-two step so that int8 levels of std ~32 reproduce `std` (q * step is exact in float32)."""
    return float(2.0 ** np.round(np.log2(std / 32)))


def _make_case(name, width_mult, num_classes, batch, height, width, seed, features):
    import torch
    import torchvision

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = torchvision.models.mobilenet_v2(width_mult=width_mult, num_classes=num_classes)
    stored = {}
    with torch.no_grad():
        for key, p in model.named_parameters():  # weights: int8 * 2^k; BN affine: jittered, float16-exact
            if p.ndim >= 2:
                fan_out = p.shape[0] * (p[0, 0].numel())
                std = (2.0 / fan_out) ** 0.5 if p.ndim == 4 else 0.05
                step = _pow2_scale(std)
                q = torch.clamp(torch.round(torch.randn(p.shape, generator=gen) * std / step), -127, 127)
                p.copy_(q * step)
                stored["state." + key] = q.to(torch.int8).numpy()
                stored["scale." + key] = np.array(step, np.float32)
            elif key.endswith(".weight"):
                p.copy_((1 + 0.25 * torch.randn(p.shape, generator=gen)).half().float())
            else:
                p.copy_((0.2 * torch.randn(p.shape, generator=gen)).half().float())
        # Real running statistics (cumulative average over random batches), then jittered.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        for _ in range(4):
            model(torch.randn(8, 3, height, width, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.running_mean.shape
                m.running_mean.add_(0.1 * torch.randn(c, generator=gen) * m.running_var.sqrt())
                m.running_var.mul_(torch.exp(0.3 * torch.randn(c, generator=gen)))
                m.running_mean.copy_(m.running_mean.half().float())
                m.running_var.copy_(m.running_var.clamp_min(1e-3).half().float())
    model.eval()
    for key, t in model.state_dict().items():
        if t.ndim == 1:
            stored["state." + key] = t.half().numpy()
            assert torch.equal(t.half().float(), t), key
    assert torch.equal(torch.from_numpy(decode_state(stored)["features.0.0.weight"]),
                       model.state_dict()["features.0.0.weight"])

    q = torch.clamp(torch.round(torch.randn(batch, 3, height, width, generator=gen) / IMAGE_SCALE), -127, 127)
    images = q * IMAGE_SCALE
    recorded = {}
    hooks = [model.features[k].register_forward_hook(
        lambda mod, inp, out, k=k: recorded.__setitem__(k, out.detach())) for k in features]
    with torch.no_grad():
        logits = model(images)
    for h in hooks:
        h.remove()
    stored["images_nhwc"] = q.permute(0, 2, 3, 1).contiguous().to(torch.int8).numpy()
    stored["logits"] = logits.numpy()
    for k in features:
        stored[f"features_{k}"] = recorded[k].permute(0, 2, 3, 1).contiguous().numpy()
    print(f"{name}: logits std {logits.std():.3f}, range [{logits.min():.2f}, {logits.max():.2f}]; "
          + ", ".join(f"f{k} std {recorded[k].std():.3f}" for k in features))
    return stored, {"features": ",".join(map(str, features)), "width_mult": repr(width_mult),
                    "num_classes": str(num_classes), "torch": torch.__version__,
                    "torchvision": torchvision.__version__}


def main():
    import safetensors.numpy
    OUT.mkdir(parents=True, exist_ok=True)
    import torch
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # reductions in a fixed order: the same files on every run
    for name, args in CASES.items():
        stored, metadata = _make_case(name, *args)
        path = OUT / f"mobilenet_v2_{name}.safetensors"
        safetensors.numpy.save_file(stored, str(path), metadata=metadata)
        path.chmod(0o644)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    sys.exit(main())
