"""Labels for a sample of documents: 1 = "textbook quality", 0 = not.

An annotator is named by a string (``--annotator``):

- ``rubric``: ``phijax.data.quality.rubric`` (docstrings, examples, comments, short
  functions, code rather than data); what stands in for a strong model offline.
- ``labels:FILE``: JSON Lines of ``{"key": document key, "label": 0 or 1}`` (a person's,
  or another tool's); the sample is the documents the file names.
- ``run:DIR``, ``params:DIR``, ``hf:DIR``: a model asked a question after each
  document, as phi-1 asked GPT-4 (Gunasekar et al. 2023, section 2.1). The answer is the
  model's log-odds of " yes" over " no" as the next token; the top ``label_share`` of
  the sample by that margin is labelled 1 (a base model's yes/no preference means
  something only relative to other documents).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from phijax import cli, files
from phijax.data.quality import rubric

MODEL_KINDS = ("run", "params", "hf")
KINDS = ("rubric", "labels") + MODEL_KINDS
QUESTION = ("\n\n# Question: is the code above clear, documented and instructive for a "
            "student learning to program?\n# Answer (yes or no):")


@dataclasses.dataclass(frozen=True)
class Annotator:
  kind: str
  path: str = ""

  @property
  def identity(self) -> dict:
    """What the labels depend on (a file's or model's path and content stamp)."""
    if self.kind == "rubric":
      return dict(kind="rubric", points=list(rubric.POINTS), good=rubric.GOOD)
    return dict(kind=self.kind, path=self.path, stamp=stamp(self.path))


def parse(spec: str, flag: str = "--annotator") -> Annotator:
  kind, _, path = spec.partition(":")
  if kind not in KINDS or (kind == "rubric") != (not path):
    raise cli.UsageError(f"{flag}={spec!r}: use rubric, labels:FILE.jsonl, run:DIR, "
                         "params:DIR or hf:DIR")
  path = os.path.abspath(os.path.expanduser(path)) if path else ""
  if kind == "labels" and not os.path.isfile(path):
    raise cli.UsageError(f"{flag}: no labels file {path}")
  if kind in MODEL_KINDS and not os.path.isdir(path):
    raise cli.UsageError(f"{flag}: no directory {path}")
  return Annotator(kind, path)


def stamp(path: str) -> str:
  """A cheap content stamp of a file or directory (``phijax.files.stamp``): a new
  checkpoint or an edited labels file is a new annotator."""
  if os.path.isfile(path):
    return files.stamp(os.path.dirname(path), [path])[:16]
  return files.stamp(path, sorted(os.path.join(d, f) for d, _, fs in os.walk(path)
                                  for f in fs))[:16]


def read_labels(path: str, keys: list[str]) -> dict[str, int]:
  """``{key: label}`` from a labels file; keys must be documents of the source."""
  known, out = set(keys), {}
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
        key, label = rec["key"], rec["label"]
      except (ValueError, KeyError, TypeError):
        raise cli.UsageError(f"{path}:{n}: expected {{\"key\": ..., \"label\": 0 or 1}}, "
                             f"got {line.strip()[:80]!r}") from None
      if label not in (0, 1, True, False):
        raise cli.UsageError(f"{path}:{n}: label must be 0 or 1, got {label!r}")
      if key not in known:
        raise cli.UsageError(f"{path}:{n}: {key!r} is no document of the source")
      out[key] = int(label)
  if not out:
    raise cli.UsageError(f"{path} holds no labels")
  return out


def model_margins(loaded, texts: list[str], *, max_tokens: int, batch_size: int,
                  progress=None) -> np.ndarray:
  """log p(" yes") - log p(" no") after each document (its first tokens, so that the
  document and the question fit ``max_tokens``) and ``QUESTION``."""
  from phijax.curate.forward import Forward
  tok = loaded.tokenizer
  question = tok.encode(QUESTION)
  yes, no = tok.encode(QUESTION + " yes"), tok.encode(QUESTION + " no")
  shared = next((i for i, (a, b) in enumerate(zip(yes, no)) if a != b), None)
  if shared is None or shared < len(question) - 1:
    raise ValueError("the annotator's tokenizer does not tell ' yes' from ' no' after "
                     "the question")
  prefix = yes[:shared]
  room = min(max_tokens, loaded.cfg.max_position_embeddings) - len(prefix)
  if room < 16:
    raise cli.UsageError(f"--max_tokens={max_tokens} leaves the document {room} tokens "
                         "after the annotator's question; raise it")
  rows = [tok.encode(t)[:room] + prefix for t in texts]
  logits = Forward(loaded.cfg, loaded.params).next_logits(rows, batch_size=batch_size,
                                                          progress=progress)
  logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  return logp[:, yes[shared]] - logp[:, no[shared]]


def top_share(margins: np.ndarray, share: float) -> np.ndarray:
  """Labels: 1 for the top ``share`` of ``margins`` (ties to the earlier document)."""
  n = max(1, int(round(share * len(margins))))
  order = np.lexsort((np.arange(len(margins)), -margins))
  out = np.zeros(len(margins), np.int64)
  out[order[:n]] = 1
  return out
