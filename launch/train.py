r"""Train the shipped toy models on the toy world (resumable: rerun the same command after a kill).

  python launch/train.py --config=configs/toy_vae.py --workdir=runs/toy_vae   # -> runs/toy_vae/vae/
  python launch/train.py --config=configs/toy_ldm.py --workdir=runs/toy_ldm   # -> runs/toy_ldm/pipeline/

On a CPU the training loop runs data parallel over one XLA device per core (`train.host_device_flags`).
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "training config (configs/toy_*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, metrics.csv, sample grids and the export go here")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    from jaxprobe import io, toymodels, train
    os.environ["XLA_FLAGS"] = train.host_device_flags(os.environ.get("XLA_FLAGS", ""))  # before jax's first use
    from jaxprobe.models import load_vae, save_component, save_pipeline

    c, workdir = _CONFIG.value, Path(_WORKDIR.value)
    # A resume may lengthen the schedule or change what evaluations do; anything else needs a new workdir.
    io.claim_workdir(workdir, c.to_dict(), kind="training run",
                     may_change=("num_steps", "decoder_steps", "eval_every", "checkpoint_every", "quality_images",
                                 "labelers_dir"))
    if c.model == "vae":
        module, params = toymodels.train_vae(c, workdir)
        save_component(workdir / "vae", module, params)
        print(f"toy VAE written to {workdir / 'vae'} (scaling_factor {module.config.scaling_factor:.4f})")
    elif c.model == "ldm":
        from jaxprobe import labelers
        vae_model, vae_params = load_vae(c.vae_dir)
        lab = labelers.load_labelers(c.labelers_dir) if c.get("labelers_dir") else None
        pipe = toymodels.train_ldm(c, workdir, vae_model, vae_params, lab)
        save_pipeline(workdir / "pipeline", pipe)
        print(f"toy pipeline written to {workdir / 'pipeline'}")
    elif c.model == "labelers":
        from jaxprobe import labelers
        lab, scores = labelers.train_labelers(c, workdir)
        for out in [workdir / "labelers"] + ([Path(c.export_dir)] if c.export_dir else []):
            labelers.save_labelers(out, lab.module, lab.params, scores)
            print(f"toy labelers written to {out}")
        print(f"held-out ({scores['num_images']} scenes): saliency IoU {scores['saliency_iou']:.4f}, "
              f"depth RMSE (z) {scores['depth_rmse']:.4f}, Spearman {scores['depth_spearman']:.4f}")
    else:
        raise app.UsageError(f"unknown config.model {c.model!r}; valid: vae, ldm, labelers")


if __name__ == "__main__":
    app.run(main)
