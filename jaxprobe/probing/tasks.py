"""What a probe predicts. The probing core knows kinds of target, not tasks: a study defines its tasks as `Task`
values (the scene study: saliency and depth, `jaxprobe.scene.tasks`) and passes them to every core function.
Nothing is registered, so what the core does never depends on which study was imported.

Kinds:
- 'mask': a binary map per image [N, H, W] (nonzero = positive); the probe reads every token of a spatial map,
  emits 2 logits per token, is trained with cross-entropy and predicts the argmax; ranking metrics ('ap') score
  the positive class's probability instead.
- 'dense': a real-valued map per image [N, H, W] (e.g. z-scored depth); the probe emits 1 value per token, is
  trained with Huber (delta 1) and predicts that value.
- 'label': one binary label per image [N] (nonzero = positive); the probe reads one feature vector per image
  [N, D] (e.g. a pooled or flattened map), emits 2 logits, is trained with cross-entropy and predicts the argmax.
"""
from __future__ import annotations

import dataclasses

from jaxprobe.probing.metrics import SCORE_METRICS
from jaxprobe.validate import check_choice

KINDS = {"mask": 2, "dense": 1, "label": 2}  # kind -> probe output width
SPATIAL_KINDS = ("mask", "dense")  # kinds whose probes read a token grid and whose labels are maps
# Every per-image metric `jaxprobe.probing.metrics` computes, and whether a lower value is better.
LOWER_IS_BETTER = {"dice": False, "iou": False, "accuracy": False, "spearman": False, "pearson": False,
                   "rmse": True, "ap": False}


@dataclasses.dataclass(frozen=True)
class Task:
    """A probing task: its name (a `results.csv` task), kind, per-image metrics and the metric it is judged by.
    Frozen and hashable, so jitted functions take it as a static argument."""

    name: str
    kind: str
    metrics: tuple[str, ...]
    headline: str

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a task name must be a non-empty string, got {self.name!r}")
        check_choice("task kind", self.kind, KINDS)
        for m in self.metrics:
            check_choice(f"metric of task {self.name!r}", m, LOWER_IS_BETTER)
            if m in SCORE_METRICS and self.kind != "mask":
                raise ValueError(f"metric {m!r} of task {self.name!r} ranks the pixels of a mask; task kind "
                                 f"{self.kind!r} has none (it fits kind 'mask')")
        check_choice(f"headline metric of task {self.name!r}", self.headline, self.metrics)

    def __str__(self) -> str:
        return self.name

    @property
    def outputs(self) -> int:
        return KINDS[self.kind]

    @property
    def spatial(self) -> bool:
        """Whether probes read a token grid [.., h, w, C] against label maps [N, H, W] (else vectors vs [N])."""
        return self.kind in SPATIAL_KINDS


def check_task(task) -> Task:
    """`task` itself if it is a Task; a clear error otherwise (a bare name cannot be looked up: no registry)."""
    if not isinstance(task, Task):
        raise TypeError(f"expected a probing.tasks.Task, got {type(task).__name__} {task!r}; a study passes its "
                        "Task values (e.g. jaxprobe.scene.tasks.SALIENCY)")
    return task
