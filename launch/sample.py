r"""Text-to-image sampling from a diffusers-format Stable Diffusion directory; writes PNGs + an index.

  python launch/sample.py --config=configs/toy_sample.py --config.prompts="a red sphere|a blue cube" \
      --workdir=runs/samples
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so config files can import configs.*

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/toy_sample.py", "sampling config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/samples", "where PNGs and samples.json go")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    import jax.numpy as jnp
    from tqdm import tqdm

    from jaxprobe import io, sampling
    from jaxprobe.models import load_pipeline

    c = _CONFIG.value
    if not c.pipeline_dir:
        raise app.UsageError("set --config.pipeline_dir to a diffusers Stable Diffusion directory")
    prompts = sampling.read_prompts(c.prompts, c.prompts_file) * c.num_images_per_prompt
    pipe = load_pipeline(c.pipeline_dir)
    height, width = sampling.check_size(pipe, c.height or None, c.width or None)
    sampling.schedulers.get_scheduler(c.scheduler, pipe.scheduler_config)  # fail before any work
    workdir = Path(_WORKDIR.value)
    index, start = [], time.perf_counter()
    bar = tqdm(total=len(prompts), desc="sampling", unit="img")
    for lo in range(0, len(prompts), c.batch_size):
        batch = prompts[lo:lo + c.batch_size]
        seeds = [c.seed + lo + k for k in range(len(batch))]
        out = sampling.sample(pipe, batch, seed=seeds, num_inference_steps=c.num_inference_steps,
                              guidance_scale=c.guidance_scale, scheduler=c.scheduler, height=height, width=width,
                              dtype=jnp.dtype(c.dtype))
        for k, (prompt, seed, image) in enumerate(zip(batch, seeds, out.images)):
            name = f"{lo + k:05d}_seed{seed}.png"
            io.write_png(workdir / name, image)
            index.append({"file": name, "prompt": prompt, "seed": seed})
        bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - start
    io.write_json(workdir / "samples.json", {"config": c.to_dict(), "images": index})
    print(f"wrote {len(index)} images ({height}x{width}, {c.scheduler} {c.num_inference_steps} steps, "
          f"CFG {c.guidance_scale}) to {workdir} in {seconds:.1f} s ({len(index) / seconds:.2f} img/s incl. compile)")


if __name__ == "__main__":
    app.run(main)
