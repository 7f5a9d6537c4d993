import os
import sys
from pathlib import Path

# Multi-device code is tested on 8 fake CPU devices; must be set before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Never reach the network from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# tests/reference is importable as `reference`.
sys.path.insert(0, str(Path(__file__).parent))
