"""The contract every launcher keeps, as a new user meets it: a bad input is exit status 2 and one line
`error: <message>` on stderr, with no traceback, and leaves nothing in the workdir that would refuse the corrected
command (by `io.claim_workdir`'s rule: a workdir holding only a config.json is no claim). Each case runs the launcher
as a subprocess from the repository root; the long table is in the slow tier (a launcher costs ~5-10 s of imports),
the flag parsing's own cases are in-process in tests/test_cli.py."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE, TRAIN, PROBE, INTERVENE, CONCEPTS = (f"launch/{n}.py" for n in ("sample", "train", "probe", "intervene",
                                                                         "concepts"))


def _launch(script, workdir, *args, env=None):
    run = subprocess.run([sys.executable, script, f"--workdir={workdir}", *args], cwd=ROOT, capture_output=True,
                         text=True, env={**{k: v for k, v in os.environ.items() if k != "JAXPROBE_DEBUG"},
                                         "PYTHONPATH": str(ROOT), **(env or {})})
    return run


def assert_refused(run, message: str, workdir: Path) -> None:
    """Exit 2, stderr exactly one line `error: ...` holding `message`, no traceback anywhere, and a workdir that
    holds no work (absent, or its config.json alone)."""
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stdout + run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message in lines[0], lines[0]
    assert _work(workdir) == [], "a refused run left work that blocks the corrected command"


def _work(workdir: Path) -> list[str]:
    if not workdir.is_dir():
        return []
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file() and p != workdir / "config.json")


def test_a_mistyped_config_key_is_one_line_naming_the_nearest_valid_ones(tmp_path):
    run = _launch(SAMPLE, tmp_path / "out", "--config.num_inference_step=3")
    assert_refused(run, "--config.num_inference_step is not a config key; nearest valid: num_inference_steps",
                   tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_train_checks_its_numbers_before_rendering_or_claiming(tmp_path):
    run = _launch(TRAIN, tmp_path / "run", "--config=configs/toy/vae.py", "--config.batch_size=0")
    assert_refused(run, "config.batch_size must be >= 1, got 0", tmp_path / "run")
    assert not (tmp_path / "run").exists()


# The sweep loads the pipeline and checks its config against it first (~10 s): slow.
@pytest.mark.parametrize("script", [SAMPLE, pytest.param(PROBE, marks=pytest.mark.slow)])
def test_a_workdir_that_is_a_file_is_one_line_before_any_work(tmp_path, script):
    (tmp_path / "file").write_text("not a directory")
    run = _launch(script, tmp_path / "file")
    assert_refused(run, f"--workdir={tmp_path / 'file'}: {tmp_path / 'file'} is a file, not a directory",
                   tmp_path / "file")
    assert (tmp_path / "file").read_text() == "not a directory"


def _empty(tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n")
    return tmp_path / "empty.txt"


# (launcher, arguments, what the one line says); `{tmp}` is the test's tmp_path. Every row of docs/errors.md
# that a launcher reaches from its own config with overrides alone.
TABLE = [
    (SAMPLE, ["--config.num_inference_steps=0"], "num_inference_steps must be >= 1, got 0"),
    (SAMPLE, ["--config.seed=-1"], "seed -1 is out of range 0..2**32-1"),
    (SAMPLE, ["--config.dtype=float8"], "unknown dtype 'float8'; valid choices: float32, bfloat16, float16"),
    (SAMPLE, ["--config.dtype=float16"], "dtype float16 does not run on a CPU"),
    (SAMPLE, ["--config.height=48"], "image size 48x64 is not a multiple of the VAE factor 4 x 8 = 32"),
    (SAMPLE, ["--config.height=-64"], "image size -64x64 must be positive"),
    (SAMPLE, ["--config.guidance_scale=nan"], "guidance_scale must be finite, got nan"),
    (SAMPLE, ["--config.num_images_per_prompt=0"], "config.num_images_per_prompt must be >= 1, got 0"),
    (SAMPLE, ["--config.pipeline_dir=no/such"], "config.pipeline_dir='no/such': {root}/no/such does not exist"),
    (SAMPLE, ["--config.prompts="], "config.prompts is empty: set --config.prompts='a|b' or --config.prompts_file"),
    (SAMPLE, ["--config.prompts_file={tmp}/empty.txt"], "config.prompts_file: {tmp}/empty.txt is empty (no prompts)"),
    (SAMPLE, ["--config.prompts_file=nope.txt"], "config.prompts_file='nope.txt': {root}/nope.txt does not exist"),
    (SAMPLE, ["--config.height=16777216"], "config.height/width/batch_size: sampling 16777216x64 images, 8 per "
                                            "device, in float32 needs at least 1024.0 GiB"),  # beyond any one host
    (SAMPLE, ["--config=configs/sample/toyy.py"], "--config=configs/sample/toyy.py: {root}/configs/sample/toyy.py "
                                                   "does not exist; nearest: configs/sample/toy.py"),
    (SAMPLE, ["--config.num_inference_steps=abc"], "flag --config.num_inference_steps=abc: invalid literal"),
    (SAMPLE, ["--distributed"], "--distributed found no cluster to join"),
    (TRAIN, ["--config=configs/toy/vae.py", "--config.model=gan"], "unknown config.model 'gan'; valid choices: vae"),
    (TRAIN, ["--config=configs/toy/labelers.py", "--config.num_steps=-5"], "config.num_steps must be >= 1, got -5"),
    (TRAIN, ["--config=configs/toy/ldm.py", "--config.lr=0"], "config.lr must be a finite number > 0, got 0.0"),
    (TRAIN, ["--config=configs/toy/ldm.py", "--config.caption_dropout=2"], "config.caption_dropout must be <= 1"),
    (TRAIN, ["--config=configs/toy/vae.py", "--config.crop_size=12"], "config.crop_size must be 0 (whole images) or "
                                                                       "a multiple of 8"),
    (TRAIN, ["--config=configs/toy/mobilenet_v2.py", "--config.num_train=16"], "config.num_train=16 is below "
                                                                               "config.batch_size=64"),
    (TRAIN, ["--config=configs/toy/ldm.py", "--config.vae_dir=no/vae"], "config.vae_dir='no/vae': {root}/no/vae "
                                                                         "does not exist"),
    (TRAIN, ["--config=configs/toy/vae.py", "--config.mesh.data=3"], "config.mesh: data=3 x probe=1 does not fit"),
    (PROBE, ["--config.probe.kindd=ridge"], "--config.probe.kindd is not a config key; nearest "
                                                            "valid: probe.kind"),
    (PROBE, ["--config.data=imagined"], "unknown config.data 'imagined'; valid choices: generated"),
    (PROBE, ["--config.models=('randomised',)"], "unknown config.models 'randomised'"),
    (PROBE, ["--config.tasks=('normals',)"], "unknown config.tasks 'normals'"),
    (PROBE, ["--config.probe.kind=lasso"], "unknown config.probe.kind 'lasso'"),
    (PROBE, ["--config.probe.lr=0"], "config.probe.lr must be a finite number > 0, got 0.0"),
    (PROBE, ["--config.num_val=128"], "config.num_val must be <= 127, got 128"),
    (PROBE, ["--config.num_inference_steps=3", "--config.steps=(7,)"],
     "config.steps: step 7 is out of range for 3 sampling steps"),
    (PROBE, ["--config.stage=capure"], "unknown config.stage 'capure'; valid choices: all, capture"),
    (PROBE, ["--config.resolution=6"], "config.resolution must be a positive multiple of 32"),
    (PROBE, ["--config.stage=fit"], "has not finished the capture stage: run --config.stage=capture"),
    (PROBE, ["--config.pipeline_dir=no/such"], "config.pipeline_dir='no/such': {root}/no/such does not exist"),
    (INTERVENE, ["--config.task=edges"], "unknown config.task 'edges'; valid choices: saliency, depth"),
    (INTERVENE, ["--config.controls=('shufled',)"], "unknown config.controls 'shufled'"),
    (INTERVENE, ["--config.lr=0"], "config.lr must be a finite number > 0, got 0.0"),
    (INTERVENE, ["--config=configs/scene/toy_intervene_ablation.py", "--config.ablation.02_lr_1e-2.lr=0.1"],
     "--config.ablation.02_lr_1e-2.lr cannot be addressed (each key must be a Python name)"),
    (INTERVENE, ["--config=configs/scene/toy_intervene_ablation.py", "--config.ablation.s02_lr_1e_2.lrr=0.1"],
     "--config.ablation.s02_lr_1e_2.lrr is not a config key; nearest valid: ablation.s02_lr_1e_2.lr"),
    (CONCEPTS, ["--config.negatives=hard"], "unknown config.negatives 'hard'; valid choices: others, non_candidates"),
    (CONCEPTS, ["--config.probe.lr=0"], "config.probe.lr must be a finite number > 0, got 0.0"),
    (CONCEPTS, ["--config.clip_dir=no/such/clip"], "config.clip_dir='no/such/clip': "),
]


@pytest.mark.slow  # ~40 launcher processes
@pytest.mark.parametrize("script, args, message", TABLE, ids=[f"{s[7:-3]}:{' '.join(a)[:60]}" for s, a, _ in TABLE])
def test_every_bad_input_is_one_error_line_and_leaves_no_work(tmp_path, script, args, message):
    _empty(tmp_path)
    fill = {"tmp": str(tmp_path), "root": str(ROOT)}
    workdir = tmp_path / "run"
    run = _launch(script, workdir, *(a.format(**fill) for a in args))
    assert_refused(run, message.format(**fill), workdir)


@pytest.mark.slow
def test_a_rerun_with_another_config_in_a_workdir_with_work_is_refused_and_the_same_one_resumes(tmp_path):
    sys.path.insert(0, str(ROOT))
    from configs.sample import toy
    from jaxprobe import jobs
    c = toy.get_config()
    jobs.claim(tmp_path, c.to_dict(), kind="set of samples", may_change=("mesh",))
    (tmp_path / "00000_seed0.png").write_bytes(b"")  # work
    run = _launch(SAMPLE, tmp_path, "--config.seed=5")
    assert run.returncode == 2 and run.stderr.splitlines() == [
        f"error: {tmp_path} holds a set of samples with another config (differs in: seed): seed was 0, now 5; use a "
        "new --workdir or delete it"], run.stderr[-2000:]
