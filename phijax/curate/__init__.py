"""Curating a corpus with a model: quality scores (phi-1's filter) and synthetic
textbooks (phi-1's and phi-1.5's generated data).

    python -m phijax.curate score --config=tiny --workdir=RUN --annotator=rubric
    python -m phijax.curate synth --workdir=TEACHER --out=DIR --count=200

The model-free tools (dedup, contamination, the filters a data config applies, the
rubric annotator) live in ``phijax.data.quality``; this package holds the ones that run
a model, so it sits above ``evals`` (generation, model sources) in the layers.
"""
