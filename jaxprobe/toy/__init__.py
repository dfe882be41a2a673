"""The embedded toy world and the shipped toy models trained on it, so every study runs on a CPU in minutes.

world/ (scenes with exact labels), data.py (cached scenes, batches by step), recipes.py (the toy VAE and LDM, and
`train` for launch/train.py), labelers.py (stand-ins for the paper's saliency and depth networks), quality.py (the
goals the models are held to), demo.py (what `make demo` runs).
"""
