"""Study 1: scene representations in a latent diffusion model (arXiv 2306.05720). Importing the package
registers its probing tasks (saliency, depth) and its layer names with the probing core."""
from jaxprobe.scene import layers, tasks  # noqa: F401
