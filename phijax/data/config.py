"""Defaults for ``config.data`` (owned by the data pipeline)."""
from ml_collections import ConfigDict


def defaults() -> ConfigDict:
  return ConfigDict(dict(seq_len=256, workers=0))
