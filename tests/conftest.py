"""Test-wide setup: 8 simulated CPU devices, so sharding tests run anywhere."""

import os

# Must happen before jax initializes its backends; harmless for single-device tests.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
