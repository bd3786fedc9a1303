"""Installs trlx_jax: trust-region RL fine-tuning of language models in JAX."""

from setuptools import find_packages, setup

setup(
    name="trlx_jax",
    version="0.1.0",
    description="Reinforcement-learning fine-tuning of LLMs in JAX with principled trust regions "
    "(TROLL, DPPO) next to the PPO/GRPO clip family.",
    packages=find_packages(include=["trlx_jax", "trlx_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6",
        "flax>=0.11",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "transformers>=4.51",
        "tokenizers>=0.21",
        "safetensors>=0.4",
        "tensorflow-datasets>=4.9.8",
        "array_record>=0.7",
        "ml-collections>=1.0",
        "numpy>=1.26",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
    ],
    extras_require={
        # torch is pinned: an unpinned torch pulls several GB of CUDA wheels;
        # 2.13.0 is the local CPU build.
        "test": [
            "pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0", "scipy>=1.11", "ruff>=0.6",
            "math-verify>=0.7", "wandb>=0.19",
            # The notebook tests execute notebooks/ headless (the notebooks extra).
            "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6", "filelock>=3.12",
        ],
        "wandb": ["wandb>=0.19"],
        "math": ["math-verify>=0.7"],
        "notebooks": ["nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6", "matplotlib>=3.8"],
    },
)
