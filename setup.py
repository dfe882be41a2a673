"""jaxprobe: probes and causal interventions for generative and vision models in JAX/Flax."""
from setuptools import find_packages, setup

# Versions that were installed and tested together (Python 3.11, CPU).
INSTALL = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "numpy>=2.0,<3",
    "scipy>=1.13",
    "absl-py==2.5.1",
    "ml_collections==1.1.0",
    "safetensors==0.8.0",
    "tokenizers==0.23.3",
    "transformers==5.24.0",  # CLIPTokenizer only at runtime (no torch needed)
    "tensorflow-datasets==4.9.10",
    "importlib_resources",  # tfds needs it but does not declare it
    "array_record==0.8.6",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "Pillow>=10",
]
TORCH_REF = ["torch==2.13.0", "diffusers==0.42.1"]  # parity reference and baselines only

setup(
    name="jaxprobe",
    version="0.1.0",
    description=__doc__,
    # configs/, launch/ and benchmarks/ are used from a checkout (launchers find them beside themselves), not installed
    packages=find_packages(include=["jaxprobe", "jaxprobe.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL,
    extras_require={
        "test": ["pytest>=8", "pytest-xdist==3.8.0"] + TORCH_REF,
        "bench": TORCH_REF,
    },
)
