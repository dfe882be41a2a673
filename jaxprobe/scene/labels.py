"""The scene study's labels per image: a salient-object mask and depth, and where each comes from.

Sources, per task (`sources` picks them from the config and refuses a task with none, or with two):
  - exact: encoded toy-world scenes carry their own masks and depth;
  - user files in config.labels_dir, row i = image i of the sweep's images/index.csv (a copy of which must lie
    beside them: it is how their order is checked): `saliency.npy` (bool or 0/1 [N, H, W]) or `segmentation.npy`
    (instance ids [N, H, W], 0 = background; the salient object is the largest instance, `largest_instance`), and
    `depth.npy` (finite [N, H, W]);
  - a DPT depth model (config.depth_model_dir: a transformers `DPTForDepthEstimation` directory, e.g. DPT-Large, the
    MiDaS v3 model the paper labels depth with), run batched under jit in the same job;
  - the shipped toy labelers (config.labelers_dir), the toy world's stand-ins for both of the paper's labelers.

Conventions (docs/labels.md): saliency is the largest visible object, as the toy world defines it; depth is kept as
its source gives it (MiDaS/DPT: relative inverse depth, larger = nearer; toy: distance) and z-scored with the train
split's global mean and std, as the paper does. 'inverse_depth' is 1 / the distance of the same source (toy world,
toy labelers, a user's depth.npy), the paper's unit, z-scored the same way; it is refused for a DPT, whose 'depth'
is already inverse. Label H and W must equal the images' or be multiples of every probed layer's token grid (a
probe's prediction is upsampled to the label size by an integer factor).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxprobe import io, mesh, validate
from jaxprobe.probing import metrics
from jaxprobe.scene import image_index

SALIENCY_FILES = ("saliency.npy", "segmentation.npy")
DEPTH_FILE = "depth.npy"
SOURCES_FILE = "sources.json"
PLAIN_FILES = ("saliency.npy", DEPTH_FILE)  # what `from_files` reads
INVERSE_DEPTH = "inverse_depth"  # the task whose labels are 1 / the depth source's distance
# Distances are clipped below half the train split's 1st percentile before inverting, so only outliers are: the toy
# labelers' errors reach 0 and below (1 / ~0 would swamp the z-scored labels); the toy world's 1st percentile is
# ~1.9 units and its nearest surface ~1.5, so its floor (~0.9) clips nothing else.
NEAR_PERCENTILE, NEAR_FRACTION = 1.0, 0.5


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one task's labels come from: kind is 'exact', 'file', 'segmentation', 'depth_model' or 'labelers'."""

    kind: str
    path: str = ""

    def __str__(self):
        return self.kind if not self.path else f"{self.kind} {self.path}"


def sources(c, tasks: Sequence[str]) -> dict[str, Source]:
    """Each task's label source from config.labels_dir, config.depth_model_dir and config.labelers_dir (nothing is
    read). One source per task: two would leave it unclear which labels were probed. 'inverse_depth' has depth's
    source (it inverts that source's distances)."""
    check_inverse_depth(c, tasks)
    files = {}
    if c.labels_dir:
        directory = validate.existing_path(c, "labels_dir", "a directory of label files (docs/labels.md)",
                                           (image_index.INDEX,))
        files = {name: directory / name for name in SALIENCY_FILES + (DEPTH_FILE,) if (directory / name).exists()}
    out = {}
    for task in tasks:
        depth = task in ("depth", INVERSE_DEPTH)
        given = [(("file" if name != "segmentation.npy" else "segmentation"), str(files[name]))
                 for name in ((DEPTH_FILE,) if depth else SALIENCY_FILES) if name in files]
        if task == "depth" and c.get("depth_model_dir"):
            given.append(("depth_model", str(Path(c.depth_model_dir).absolute())))
        if len(given) > 1:
            raise ValueError(f"{task} labels would come from {' and from '.join(p for _, p in given)}; keep one "
                             f"(config.labels_dir files{', config.depth_model_dir' if task == 'depth' else ''})")
        if not given and c.labelers_dir:
            given.append(("labelers", str(Path(c.labelers_dir).absolute())))
        if not given:
            names = DEPTH_FILE if depth else " or ".join(SALIENCY_FILES)
            model = ", or config.depth_model_dir (a DPT / MiDaS directory)" if task == "depth" else ""
            raise ValueError(f"no source of {task} labels: put {names} in config.labels_dir{model}, or set "
                             "config.labelers_dir (the toy labelers)")
        out[task] = Source(*given[0])
    return out


def check_inverse_depth(c, tasks: Sequence[str]) -> None:
    """'inverse_depth' inverts distances; a DPT (config.depth_model_dir) predicts inverse depth already, and
    inverting it again would give neither unit, so that pair is refused (its 'depth' is the paper's label)."""
    if INVERSE_DEPTH in tasks and c.get("depth_model_dir"):
        raise ValueError(f"config.tasks has {INVERSE_DEPTH!r}, which inverts distance labels, but "
                         "config.depth_model_dir's DPT already predicts relative inverse depth (larger = nearer, the "
                         f"paper's label): probe it as 'depth' and drop {INVERSE_DEPTH!r} from config.tasks")


def inverse_depth(distance: np.ndarray, num_train: int) -> np.ndarray:
    """1 / distance float32 [N, H, W] (larger = nearer), distances clipped first below `NEAR_FRACTION` of the first
    num_train images' `NEAR_PERCENTILE`. The toy world's sky (render.FAR = 30) becomes 1/30, the smallest value."""
    distance = np.asarray(distance, np.float64)
    near = np.percentile(distance[:num_train], NEAR_PERCENTILE)
    if not near > 0:
        raise ValueError(f"{INVERSE_DEPTH} inverts distances, but {NEAR_PERCENTILE:g}% of the train split's depth "
                         f"labels are <= {near:g}; they must be distances (> 0, larger = farther)")
    floor = NEAR_FRACTION * near
    return (1.0 / np.maximum(distance, floor)).astype(np.float32)


def check_files(srcs: dict[str, Source], index: list[dict], grids: Sequence[tuple[int, int]],
                image_size: tuple[int, int]) -> None:
    """The user's files against the sweep's image index, from their headers only (seconds, before any capture or
    fit): the index copy beside them, one label per image, and a size the probes can use."""
    for task, src in srcs.items():
        if src.kind not in ("file", "segmentation"):
            continue
        path = Path(src.path)
        rows = image_index.check_order(path.parent / image_index.INDEX, index)
        shape = np.load(path, mmap_mode="r").shape
        if len(shape) != 3 or shape[0] != rows:
            raise ValueError(f"{path} has shape {shape}; need [N={rows}, H, W]: one {task} label per image of the "
                             f"{image_index.INDEX} beside it, in its order")
        _check_size(path, shape[1:], grids, image_size)


def _check_size(path, hw: tuple[int, int], grids, image_size) -> None:
    multiple = tuple(math.lcm(*(g[i] for g in grids)) for i in (0, 1))
    if tuple(hw) != tuple(image_size) and (hw[0] % multiple[0] or hw[1] % multiple[1]):
        raise ValueError(f"{path} holds {hw[0]}x{hw[1]} labels; need the images' {image_size[0]}x{image_size[1]} "
                         f"or a multiple of every probed layer's token grid ({multiple[0]}x{multiple[1]})")


def read(src: Source, n: int) -> np.ndarray:
    """A user file's labels, checked value by value: masks bool [N, H, W] (a segmentation -> its largest instance),
    depth float32 [N, H, W]. Each problem is one ValueError naming the file and the first bad image."""
    path = Path(src.path)
    arr = np.load(path, allow_pickle=False)
    if src.kind == "segmentation":
        if not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
            raise ValueError(f"{path} must hold non-negative integer instance ids (0 = background), got "
                             f"{arr.dtype}{_first(arr < 0, ' with negative ids')}")
        return largest_instance(arr)
    if path.name == DEPTH_FILE:
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{path} must hold numbers, got {arr.dtype}")
        depth = arr.astype(np.float32)
        if not np.isfinite(depth).all():
            raise ValueError(f"{path} holds non-finite depth{_first(~np.isfinite(depth), '')}")
        return depth
    if arr.dtype != bool:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"{path} must be a bool or 0/1 mask, got {arr.dtype}")
        bad = (arr != 0) & (arr != 1)
        if bad.any():
            raise ValueError(f"{path} must be a bool or 0/1 mask; it holds other values{_first(bad, '')} (e.g. "
                             f"{arr[bad].flat[0].item()}); save `mask > 0` for a 0/255 mask")
    return arr.astype(bool)


def _first(bad: np.ndarray, what: str) -> str:
    """' at image k' for the first image with a bad value ('' if none)."""
    rows = np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))
    return f"{what} at image {rows[0]}" if len(rows) else ""


def largest_instance(segmentation: np.ndarray) -> np.ndarray:
    """The salient-object rule for real images: the instance (id > 0) with the most pixels, per image; ties go to
    the smaller id; an image with no instance gets an empty mask. [N, H, W] ints -> bool [N, H, W]."""
    out = np.zeros(segmentation.shape, bool)
    for i, seg in enumerate(segmentation):
        counts = np.bincount(seg.ravel())
        counts[0] = 0
        if counts.any():
            out[i] = seg == counts.argmax()
    return out


def from_files(directory: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(salient, depth) of the first n images from `saliency.npy` and `depth.npy` in `directory`, value-checked
    (the intervention study's plain-sample labels)."""
    out = []
    for name in (SALIENCY_FILES[0], DEPTH_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"no {name} in {directory}: labels are saliency.npy and depth.npy, [N, H, W]")
        arr = read(Source("file", str(directory / name)), n)
        if arr.ndim != 3 or arr.shape[0] < n:
            raise ValueError(f"{directory / name} has shape {arr.shape}; need [N>={n}, H, W]")
        out.append(arr[:n])
    return out[0], out[1]


def check_labelers(c) -> None:
    """Toy labelers label the generated images after the capture: they must load and take images of
    config.resolution."""
    from jaxprobe.toy import labelers
    path = validate.existing_path(c, "labelers_dir", "a labelers directory, or set config.labels_dir",
                                  (labelers.CONFIG_NAME, labelers.WEIGHTS_NAME))
    size = labelers.load_labelers(path).config.resolution
    if size != c.resolution:
        raise ValueError(f"config.labelers_dir: {path} labels {size}x{size} images; config.resolution is "
                         f"{c.resolution}")


def from_labelers(directory, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shipped toy labelers' (salient mask, raw depth) for uint8 images [N, H, W, 3]."""
    from jaxprobe.toy import labelers
    return labelers.load_labelers(directory).label(images)


def from_depth_model(directory, images: np.ndarray, batch_size: int) -> np.ndarray:
    """A DPT's relative inverse depth float32 [N, H, W] for uint8 images [N, H, W, 3], batch by batch under one jit
    (the last batch padded), split over the mesh's data axis."""
    from jaxprobe.models import dpt, load_dpt
    module, params = load_dpt(directory)
    pre = dpt.preprocessor(directory)
    params = mesh.replicate(params)
    predict = functools.partial(dpt.predict_depth, module, **pre)  # jitted; the preprocessing is static
    n = len(images)
    padded = np.concatenate([images, np.zeros((-n % batch_size, *images.shape[1:]), images.dtype)])
    out = [mesh.gather(predict(params, mesh.shard(padded[i:i + batch_size])))
           for i in range(0, len(padded), batch_size)]
    return np.concatenate(out)[:n].astype(np.float32)


def make(c, srcs: dict[str, Source], images, exact: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """{task: raw labels [N, H, W]} from each task's source ('inverse_depth': 1 / the source's distance);
    `images` is a callable giving the uint8 images (read only if a model labels them)."""
    n = c.num_train + c.num_test
    out, labelled = {}, None
    for task, src in srcs.items():
        of = "depth" if task == INVERSE_DEPTH else task
        if src.kind == "exact":
            out[task] = exact[of]
        elif src.kind in ("file", "segmentation"):
            out[task] = read(src, n)[:n]
        elif src.kind == "depth_model":
            out[task] = from_depth_model(src.path, images(), c.batch_size)
        else:
            labelled = labelled or dict(zip(("saliency", "depth"), from_labelers(src.path, images())))
            out[task] = labelled[of]
        if task == INVERSE_DEPTH:
            out[task] = inverse_depth(out[task], c.num_train)
    return out


def save(directory: Path, arrays: dict[str, np.ndarray], record: dict[str, dict]) -> None:
    """<workdir>/labels/<task>.npy and sources.json, each task's source record (written last: labels with a
    sources.json are complete)."""
    for task, arr in arrays.items():
        with io.atomic_path(directory / f"{task}.npy") as tmp:
            np.save(tmp, arr)
    io.write_json(directory / SOURCES_FILE, record)


def load(directory: Path, tasks: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The labels `save` wrote, or None if the label stage has not finished."""
    if not (directory / SOURCES_FILE).exists():
        return None
    return {task: np.load(directory / f"{task}.npy", allow_pickle=False) for task in tasks}


def saved_sources(directory: Path) -> dict[str, str] | None:
    path = directory / SOURCES_FILE
    return json.loads(path.read_text()) if path.exists() else None


def check_saved(directory: Path, record: dict[str, dict]) -> bool:
    """Whether `directory` holds the labels `record` ({task: {'source': str(Source), 'sha256': ...}}) describes:
    per task the same kind of source with the same content (sha256), wherever its files lie now. False if the
    label stage has not saved any; labels from other content are refused, naming the tasks that differ, since
    the workdir's probes were fitted on them."""
    have = saved_sources(directory)
    if have is None:
        return False

    def content(entry):
        return entry and (entry["source"].split(" ", 1)[0], entry["sha256"])

    differ = [task for task in record if content(have.get(task)) != content(record[task])]
    if differ:
        what = "; ".join(f"{t}: {_describe(have.get(t))}, now {_describe(record[t])}" for t in differ)
        raise ValueError(f"{directory} holds other {' and '.join(differ)} labels than this run's ({what}). The "
                         "workdir's probes were fitted on them: use a new --workdir (or delete its labels/, "
                         "probe_checkpoints/, probes/ and scores/)")
    return True


def _describe(entry) -> str:
    if not entry:
        return "none"
    return entry["source"].split(" ", 1)[0] + (f" sha256 {entry['sha256'][:12]}" if entry["sha256"] else "")


def prepare(raw: dict[str, np.ndarray], num_train: int) -> dict[str, np.ndarray]:
    """{'saliency': bool [N,H,W], 'depth' and 'inverse_depth': float32 [N,H,W], each z-scored with the first
    num_train images' statistics}."""
    out = {}
    if "saliency" in raw:
        out["saliency"] = np.asarray(raw["saliency"], bool)
    for task in ("depth", INVERSE_DEPTH):
        if task not in raw:
            continue
        mean, std = metrics.depth_stats(raw[task][:num_train])
        if not std > 0:
            raise ValueError(f"the train split's {task} labels are all equal: nothing to probe (z-scoring needs a "
                             "positive standard deviation)")
        out[task] = metrics.zscore(raw[task], mean, std)
    return out
