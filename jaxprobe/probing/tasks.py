"""What a probe predicts. The probing core knows kinds of target, not tasks: a study registers its tasks here
(the scene study: saliency and depth, `jaxprobe.scene.tasks`), and the core looks them up by name.

Kinds:
- 'mask': a binary map per image [N, H, W] (nonzero = positive); the probe emits 2 logits per token, is trained
  with cross-entropy and predicts the argmax.
- 'dense': a real-valued map per image [N, H, W] (e.g. z-scored depth); the probe emits 1 value per token, is
  trained with Huber (delta 1) and predicts that value.
"""
from __future__ import annotations

import dataclasses

from jaxprobe.validate import check_choice

KINDS = {"mask": 2, "dense": 1}  # kind -> probe output width
# Every per-image metric `jaxprobe.probing.metrics` computes, and whether a lower value is better.
LOWER_IS_BETTER = {"dice": False, "iou": False, "accuracy": False, "spearman": False, "pearson": False,
                   "rmse": True}


@dataclasses.dataclass(frozen=True)
class Task:
    """A probing task: its name (a `results.csv` task), kind, per-image metrics and the metric it is judged by."""

    name: str
    kind: str
    metrics: tuple[str, ...]
    headline: str

    def __post_init__(self):
        check_choice("task kind", self.kind, KINDS)
        for m in self.metrics:
            check_choice(f"metric of task {self.name!r}", m, LOWER_IS_BETTER)
        check_choice(f"headline metric of task {self.name!r}", self.headline, self.metrics)

    @property
    def outputs(self) -> int:
        return KINDS[self.kind]


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Make `task` known by its name; registering the same definition twice is a no-op, a different one an error."""
    if _REGISTRY.setdefault(task.name, task) != task:
        raise ValueError(f"task {task.name!r} is already registered as {_REGISTRY[task.name]}")
    return task


def get(task: str | Task) -> Task:
    """The registered task of that name (a Task passes through)."""
    if isinstance(task, Task):
        return task
    check_choice("task", task, _REGISTRY)
    return _REGISTRY[task]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)
