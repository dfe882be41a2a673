"""The scene study's probing tasks, as the paper defines them: the salient object (a mask; Dice) and depth
(z-scored; RMSE, plus rank and linear correlation)."""
from jaxprobe.probing import tasks

SALIENCY = tasks.register(tasks.Task("saliency", "mask", ("dice", "iou"), headline="dice"))
DEPTH = tasks.register(tasks.Task("depth", "dense", ("rmse", "spearman", "pearson"), headline="rmse"))
