"""Curriculum (being built)."""
from ml_collections import ConfigDict


def defaults() -> ConfigDict:
  return ConfigDict(dict())
