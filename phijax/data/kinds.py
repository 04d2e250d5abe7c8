"""What a data source is (``Source``) and the registry of source kinds.

Each kind registers itself in the module that defines it::

    @kinds.register("arithmetic", files=source_files, generated=True)
    def build(name, scfg, heldout_fraction, seq_len=None) -> Source: ...

``build`` makes the source ``config.data.sources[name]`` (``scfg``) describes;
``files(name, scfg)`` is ``(root, files)``, what a tokenizer's cache key fingerprints
(a generated kind names its generator). ``phijax.data.sources`` imports every module
that defines kinds and builds sources through ``lookup``: nothing switches on kinds.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from phijax.data.errors import DataError


class Source:
  """A list of documents. Subclasses fill ``heldout`` ([num_documents] bool)."""

  kind = ""
  # False: examples must not be split across rows (SFT conversations).
  split_documents = True
  # [num_documents] bool: training documents a quality filter (config.data.sources.NAME.
  # dedup / decontaminate, phijax.data.quality) removed. They are neither trained on nor
  # held out, so the held-out split means what it did without the filter. None: none.
  dropped = None

  def __init__(self, name: str):
    self.name = name
    self.heldout = np.zeros(0, bool)

  @property
  def num_documents(self) -> int:
    return len(self.heldout)

  def train_indices(self) -> np.ndarray:
    if self.dropped is None:
      return np.flatnonzero(~self.heldout)
    return np.flatnonzero(~self.heldout & ~self.dropped)

  def heldout_indices(self) -> np.ndarray:
    return np.flatnonzero(self.heldout)

  def tokens(self, i: int, tok) -> np.ndarray:
    """Token ids of document ``i`` followed by ``<|endoftext|>`` (int32)."""
    return np.asarray(tok.encode(self.text(i)) + [tok.eos_id], np.int32)

  def text(self, i: int, tok=None) -> str:
    raise NotImplementedError

  def key(self, i: int) -> str:
    """What names document ``i`` in reports (a relative path, ``file:line``): the key
    the held-out split hashes; its index where the kind has no other name."""
    return str(i)

  def tokens_of(self, indices, tok, threads: int = 1, chunk: int = 256) -> list[np.ndarray]:
    """``[tokens(i, tok) for i in indices]``; text kinds encode in batches of ``chunk``
    documents over ``threads`` (the tokenizer's own threads)."""
    if type(self).tokens is not Source.tokens or not hasattr(tok, "encode_batch"):
      return [self.tokens(int(i), tok) for i in indices]
    out = []
    for a in range(0, len(indices), chunk):
      texts = [self.text(int(i)) for i in indices[a:a + chunk]]
      out.extend(np.asarray(ids + [tok.eos_id], np.int32)
                 for ids in tok.encode_batch(texts, threads))
    return out

  def __repr__(self):
    dropped = "" if self.dropped is None else f", {int(self.dropped.sum())} filtered out"
    return (f"{type(self).__name__}({self.name!r}, {self.num_documents} documents, "
            f"{int(self.heldout.sum())} held out{dropped})")


@dataclasses.dataclass(frozen=True)
class Kind:
  name: str
  build: Callable[..., Source]  # (name, scfg, heldout_fraction, seq_len) -> Source
  files: Callable[..., tuple]  # (name, scfg) -> (root, files)
  # Documents generated, not read: configured with a helper of its own in
  # phijax.data.config (``arithmetic(...)``), not with ``source(kind, path)``.
  generated: bool = False


_KINDS: dict[str, Kind] = {}  # in registration order: the order errors list them in


def register(name: str, *, files: Callable[..., tuple], generated: bool = False):
  """Decorator: the function it decorates builds the sources of kind ``name``."""
  def add(build):
    if name in _KINDS:
      raise ValueError(f"data source kind {name!r} is registered twice")
    _KINDS[name] = Kind(name, build, files, generated)
    return build
  return add


def registered(generated: bool | None = None) -> tuple[str, ...]:
  """The kinds registered so far (``generated``: only those, or only the others): the
  kinds read from files first, then the generated ones. Every kind is registered once
  ``phijax.data.sources`` is imported (``sources.kind_names``)."""
  read = tuple(k for k, v in _KINDS.items() if not v.generated)
  made = tuple(k for k, v in _KINDS.items() if v.generated)
  return {None: read + made, False: read, True: made}[generated]


def lookup(name: str, kind: str) -> Kind:
  """The kind of source ``name``; a ``DataError`` listing the kinds if it is none."""
  if kind not in _KINDS:
    raise DataError(f"data source {name!r}: unknown kind {kind!r}; choose one of "
                    f"{registered()}")
  return _KINDS[kind]
