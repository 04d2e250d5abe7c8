"""Evaluations behind ``python -m phijax.evaluate``.

- ``perplexity``: held-out loss, perplexity and bits per byte with the training loop's
  eval step (so the numbers equal a run's final evaluation), and the gzip baseline;
- ``execute``: runs each program in its own sandboxed subprocess (limits, timeout,
  process-group kill, a guard against destructive calls) and reports a ``Result``;
- ``passk``: the unbiased pass@k estimator of Chen et al. (2021) and its table;
- ``code_tasks``: HumanEval and MBPP-format problems, check programs, stop strings
  and ``score`` (completions in, pass@k and per-sample rows out).
"""
