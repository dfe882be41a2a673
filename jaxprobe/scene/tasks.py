"""The scene study's probing tasks, as the paper defines them: the salient object (a mask; Dice) and depth
(z-scored; RMSE, plus rank and linear correlation). Values the study passes to the probing core."""
from jaxprobe.probing.tasks import Task

SALIENCY = Task("saliency", "mask", ("dice", "iou", "ap"), headline="dice")
DEPTH = Task("depth", "dense", ("rmse", "spearman", "pearson"), headline="rmse")
# 1 / the depth source's distance, z-scored: the paper's unit (MiDaS relative inverse depth) for distance sources
INVERSE_DEPTH = Task("inverse_depth", "dense", ("rmse", "spearman", "pearson"), headline="rmse")
BY_NAME = {t.name: t for t in (SALIENCY, DEPTH, INVERSE_DEPTH)}  # config.task(s) entries -> Task
