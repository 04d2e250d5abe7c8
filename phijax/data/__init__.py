"""Data: sentencepiece tokenizer, sources, grain pipeline with packing.

    from phijax import data
    tok = data.load_tokenizer(cfg.data)     # trains + caches an 8k BPE on first use
    it = data.make_train_iterator(cfg.data, tok, batch_size=32, seed=0)
    batch = next(it)                        # inputs/targets/segment_ids/positions/loss_mask
    state = it.get_state()                  # ... it.set_state(state) resumes exactly
    evals = data.make_eval_batches(cfg.data, tok, batch_size=32, num_batches=16)

Modules: ``config`` (defaults), ``tokenizer``, ``corpus`` (the built-in stdlib
corpus), ``sources``, ``sft`` (chat rendering), ``packing``, ``mixture``,
``pipeline``.
"""

from phijax.data import config
from phijax.data.errors import DataError, DataWarning
from phijax.data.packing import packing_efficiency
from phijax.data.pipeline import (build_sources, heldout_documents, make_eval_batches,
                                  make_train_dataset, make_train_iterator,
                                  source_weights)
from phijax.data.sources import write_array_record
from phijax.data.tokenizer import (Tokenizer, check_roundtrip, load_tokenizer,
                                   train_tokenizer)
