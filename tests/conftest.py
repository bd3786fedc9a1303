"""Test-wide setup: 8 simulated CPU devices, so sharding tests run anywhere."""

import os
import sys

# Must happen before jax initializes its backends; harmless for single-device tests.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Helper modules (tests/models/hf_testing.py, tests/trainer/trainer_testing.py) serve every
# test directory.
for _helpers in ("models", "trainer"):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), _helpers))
