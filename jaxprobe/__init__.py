"""jaxprobe: probes and causal interventions for generative and vision models in JAX/Flax."""
__version__ = "0.1.0"
