"""Fitted probes as artifacts other jobs load (the intervention edits activations against them).

One safetensors file per (model, task) of a sweep, tensors keyed `<layer>|<denoising step>|<param path>` (e.g.
`up_blocks_1/attentions_0/transformer_blocks_0/attn1/to_out_0|4|kernel`), and in its metadata the task (its name
and definition, so that a loader needs no study to use the probes), the probe kind and the config the probes were
fitted with (JSON). `load` returns {(layer, step): params} ready for
`probes.apply_probe` / `probes.predict`. No pickle: parameters are plain float32 arrays.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from jaxprobe import io
from jaxprobe.probing.tasks import Task, check_task

FORMAT = "jaxprobe.probes/1"


@dataclasses.dataclass(frozen=True)
class SavedProbes:
    """Probes of one model and task: {(layer path, denoising step): params}, their kind ('linear', 'mlp',
    'ridge') and `meta`, the JSON-serialisable config they were fitted with."""

    model: str
    task: Task
    kind: str
    probes: dict[tuple[str, int], Any]
    meta: dict = dataclasses.field(default_factory=dict)

    def layers(self) -> list[str]:
        return list(dict.fromkeys(layer for layer, _ in self.probes))

    def steps(self, layer: str) -> list[int]:
        return [s for l, s in self.probes if l == layer]


def path_for(directory, model: str, task: Task) -> Path:
    """Where a sweep keeps the probes of (model, task): `<directory>/<model>_<task name>.safetensors`."""
    return Path(directory) / f"{model}_{check_task(task).name}.safetensors"


def save(path, saved: SavedProbes) -> None:
    """Write `saved` to one safetensors file, atomically."""
    task = check_task(saved.task)
    tensors = {}
    for (layer, step), params in saved.probes.items():
        if "|" in layer:
            raise ValueError(f"layer path {layer!r} contains '|', which separates the parts of a probe key")
        for keys, value in traverse_util.flatten_dict(params).items():
            tensors[f"{layer}|{int(step)}|{'/'.join(keys)}"] = np.ascontiguousarray(np.asarray(value, np.float32))
    if not tensors:
        raise ValueError(f"no probes to save for model {saved.model!r}, task {task.name!r}")
    metadata = {"format": FORMAT, "model": saved.model, "task": task.name,
                "task_spec": json.dumps({"kind": task.kind, "metrics": task.metrics, "headline": task.headline}),
                "kind": saved.kind,
                "layers": json.dumps(saved.layers()),
                "meta": json.dumps(saved.meta, sort_keys=True, default=io.jsonable)}
    io.write_safetensors(path, tensors, metadata)


def load(path, task: Task | None = None) -> SavedProbes:
    """Probes written by `save` (e.g. `path_for(<sweep workdir>/probes, 'trained', SALIENCY)`). A file written
    before probes carried their task's definition loads when the caller gives that `task` (same name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved probes at {path.absolute()}")
    tensors, metadata = io.read_safetensors(path, what="saved probes")
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} holds no jaxprobe probes (format {metadata.get('format')!r}, expected {FORMAT!r})")
    if "task_spec" in metadata:
        spec = json.loads(metadata["task_spec"])
        task = Task(metadata["task"], spec["kind"], tuple(spec["metrics"]), spec["headline"])
    elif task is None or check_task(task).name != metadata.get("task"):
        raise ValueError(f"{path} does not define its task {metadata.get('task')!r} (written before probes carried "
                         "their task): load it with that task given, or refit them (rerun the sweep's fit stage)")
    flat: dict[tuple[str, int], dict] = {}
    for key, value in tensors.items():
        layer, step, param = key.split("|")
        flat.setdefault((layer, int(step)), {})[tuple(param.split("/"))] = value
    order = {layer: i for i, layer in enumerate(json.loads(metadata["layers"]))}  # safetensors sorts its keys
    probes = {k: traverse_util.unflatten_dict(v) for k, v in sorted(flat.items(), key=lambda kv: (order[kv[0][0]],
                                                                                                   kv[0][1]))}
    return SavedProbes(model=metadata["model"], task=task, kind=metadata["kind"], probes=probes,
                       meta=json.loads(metadata["meta"]))
