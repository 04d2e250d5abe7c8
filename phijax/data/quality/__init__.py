"""Data quality tools: duplicates, evaluation-set contamination and quality-score filters
of any data source.

    python -m phijax.data.quality dedup --config=tiny [--mode=near --threshold=0.8]
    python -m phijax.data.quality contamination --config=tiny --against=humaneval [--n=13]

Each prints a summary and keeps the full JSON report (``--out`` copies it). A source's
config applies them as filters of its training documents:
``config.data.sources.NAME.dedup = "exact" | "near"`` and ``.decontaminate =
"humaneval"`` (``phijax.data.quality.filters``).

Modules: ``normalize`` (what counts as the same text), ``dedup`` (exact and MinHash-LSH
clusters), ``dedup_index`` (the same, one new text at a time), ``contamination`` (n-gram
overlap), ``evalsets`` (HumanEval, problem files, held-out documents), ``rubric`` (a
model-free "textbook quality" label), ``scores`` (quality scores files and the top-
fraction filter), ``filters`` (the config's filters and the report cache), ``command``
(the command line). Scoring with a model and generating synthetic documents are
``phijax.curate``'s (they run a model, which this layer does not import).
"""
