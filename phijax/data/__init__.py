"""Data: sentencepiece tokenizer, sources, grain pipeline with packing.

    from phijax import data
    tok = data.load_tokenizer(cfg.data)     # trains + caches an 8k BPE on first use
    it = data.make_train_iterator(cfg.data, tok, batch_size=32, seed=0)
    batch = next(it)                        # inputs/targets/segment_ids/positions/loss_mask
    state = it.get_state()                  # ... it.set_state(state) resumes exactly
    evals = data.make_eval_batches(cfg.data, tok, batch_size=32, num_batches=16)

Modules: ``config`` (defaults), ``tokenizer`` (also a command: ``python -m
phijax.data.tokenizer --help``), ``corpus`` (the built-in stdlib corpus), ``kinds``
(``Source`` and the registry of source kinds), ``paths`` (which files a source reads),
``fingerprint`` (what identifies a corpus, for caches and provenance),
``sources`` (the kinds read from files; builds a source of any kind), ``arithmetic``
(a generated kind), ``sft`` (chat rendering), ``packing``, ``mixture``, ``pipeline``;
``quality/`` (dedup and contamination reports and filters: ``python -m
phijax.data.quality --help``).
"""

from phijax import lazy_exports

# Names are imported on first use (PEP 562): ``python -m phijax.data.tokenizer`` then
# runs without importing the tokenizer module twice (runpy warns when the package
# already imported it) and without loading grain.
_EXPORTS = {
    "DataError": "errors", "DataWarning": "errors",
    "packing_efficiency": "packing",
    "build_sources": "pipeline", "check_heldout": "pipeline", "heldout_documents": "pipeline",
    "epoch_rows": "pipeline",
    "make_eval_batches": "pipeline", "make_train_dataset": "pipeline",
    "make_train_iterator": "pipeline", "source_weights": "pipeline",
    "write_array_record": "sources",
    "Tokenizer": "tokenizer", "check_roundtrip": "tokenizer",
    "load_tokenizer": "tokenizer", "train_tokenizer": "tokenizer",
}
_SUBMODULES = ("arithmetic", "config", "corpus", "errors", "fingerprint", "kinds", "mixture",
               "packing", "paths", "pipeline", "sft", "sources", "tokenizer")
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)
