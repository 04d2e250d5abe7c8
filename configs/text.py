"""text: the tiny model (configs/tiny.py: 4 layers, hidden 128, Muon, 1,100 steps of
32 x 128 tokens) trained on your own code or text instead of the standard library.

    python -m phijax.train --config=configs/text.py --workdir=runs/mine \
        --config.data.sources.text.path='~/src/myproject/**/*.py'

The path is a directory (every file in it, one document per file), a quoted glob
(the files it matches), or JSON Lines (a ``.jsonl`` file, or a directory or glob of
them: one document per line, text in ``--config.data.sources.text.text_field``). It
is the only source, so the held-out split (``data.heldout_fraction`` of the
documents, by a hash of their path or ``file:line``; at least one document on each
side when there are two or more), the tokenizer (an 8k BPE trained on the train split
and cached, unless ``data.tokenizer.path`` names one) and the final line's bits per
byte beside gzip -9 all come from your data alone. A single text file is one
document, so nothing can be held out: the run stops at start-up and says to cut it
into parts. ``model.vocab_size`` follows ``data.tokenizer.vocab_size``: set that to
the size ``python -m phijax.data.tokenizer`` printed when you bring your own
tokenizer. Expect what configs/tiny.py gives for the same model and steps (about 10
minutes on a 2-core CPU) plus seconds of tokenizer training;
``configs/text.py:runlocal`` is a smoke run.
"""

from phijax import config as base
from phijax.configs import tiny
from phijax.data import config as data_config


def get_config(arg=None):
  c = tiny.get_config()
  # Only the user's data: no stdlib in the mix, so nothing else reaches the held-out
  # score, the gzip baseline or the tokenizer. "auto": .jsonl files are read as JSON
  # Lines, anything else as one document per file.
  c.data.sources = {"text": data_config.source("auto", "")}
  # One number for both: a tokenizer of N pieces needs an embedding of >= N rows.
  c.model.vocab_size = c.data.tokenizer.get_ref("vocab_size")
  return base.finish(c, arg)
