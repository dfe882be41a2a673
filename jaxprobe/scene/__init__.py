"""Study 1: scene representations in a latent diffusion model (arXiv 2306.05720)."""
