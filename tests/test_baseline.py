"""The gzip -9 baseline beside held-out bits per byte is measured on exactly the bytes
the model was scored on, at 1, 4 or all held-out batches (train.final_eval_batches),
and a run's figures say how much of the held-out split they cover. Oracles: the
held-out documents' own bytes, and the bits-per-byte denominator."""

import gzip

import numpy as np
import pytest

from phijax import config_files, data
from phijax.train import metrics, perplexity


@pytest.fixture(scope="module")
def corpus():
  cfg = config_files.load("tiny:runlocal")
  tok = data.load_tokenizer(cfg.data)
  docs = [d.encode("utf-8") for d in data.heldout_documents(cfg.data)]
  return cfg, tok, docs


def test_the_pieces_of_a_document_are_its_bytes(corpus):
  _, tok, docs = corpus
  for doc in docs:
    ids = tok.encode(doc.decode("utf-8"))
    assert b"".join(tok.piece_bytes[i] for i in ids) == doc
  assert tok.token_bytes.tolist() == [len(b) for b in tok.piece_bytes]


def _stretches(batches, tok, rows):
  """Each scored stretch of the given rows: one document's scored targets in one row."""
  for b in batches:
    for r in range(len(b["targets"])):
      if rows is not None and r not in rows:
        continue
      mask = b["loss_mask"][r] > 0
      for s in np.unique(b["segment_ids"][r][mask]):
        ids = b["targets"][r][mask & (b["segment_ids"][r] == s)]
        yield b"".join(tok.piece_bytes[i] for i in ids.tolist())


def test_gzip_is_measured_on_the_bytes_scored(corpus):
  cfg, tok, docs = corpus
  figures = {}
  for n in (1, 4, None):
    batches = data.make_eval_batches(cfg.data, tok, batch_size=cfg.train.batch_size,
                                     num_batches=n, process_index=0, process_count=1)
    scored = perplexity.scored_bytes(batches, tok)
    # As many bytes as bits per byte divides by, each stretch a held-out document's text
    # (the whole split: its first and last rows).
    assert len(scored) == sum(int(b["bytes"].sum()) for b in batches)
    rows = None if n is not None else {0, 1, 2, cfg.train.batch_size - 1}
    stretches = list(_stretches(batches[:1] + batches[-1:] if n is None else batches,
                                tok, rows))
    assert stretches and all(any(s in d for d in docs) for s in stretches)
    assert b"".join(_stretches(batches, tok, None)) == scored
    gz = perplexity.gzip_bits_per_byte(scored)
    assert gz == 8 * len(gzip.compress(scored, 9)) / len(scored)
    figures[n] = (len(scored), gz)
  assert figures[1][0] < figures[4][0] < figures[None][0]
  assert len({gz for _, gz in figures.values()}) == 3  # no longer one figure


def test_the_final_figures_say_what_they_cover():
  assert metrics._final_covers({"final": True, "eval_whole": True}) == "whole held-out split"
  assert metrics._final_covers({"final": True, "eval_whole": False,
                                "eval_batches": 2}) == "2 held-out batches"
  assert metrics._final_covers({"final": True}) == "whole held-out split"  # older runs
