"""XLA_FLAGS for a test's JAX process: the suite's own flags (tests/conftest.py) kept,
and ``devices`` simulated CPU devices in place of any device count already there."""

import os

_COUNT = "--xla_force_host_platform_device_count"


def xla_flags(devices: int | None = None) -> str:
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_COUNT)]
  return " ".join(kept + ([f"{_COUNT}={devices}"] if devices else []))
