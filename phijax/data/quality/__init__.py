"""Data quality tools: duplicates and evaluation-set contamination of any data source.

    python -m phijax.data.quality dedup --config=tiny [--mode=near --threshold=0.8]
    python -m phijax.data.quality contamination --config=tiny --against=humaneval [--n=13]

Each prints a summary and keeps the full JSON report (``--out`` copies it). A source's
config applies them as filters of its training documents:
``config.data.sources.NAME.dedup = "exact" | "near"`` and ``.decontaminate =
"humaneval"`` (``phijax.data.quality.filters``).

Modules: ``normalize`` (what counts as the same text), ``dedup`` (exact and MinHash-LSH
clusters), ``contamination`` (n-gram overlap), ``evalsets`` (HumanEval, problem files,
held-out documents), ``filters`` (the config's filters and the report cache),
``command`` (the command line).
"""
