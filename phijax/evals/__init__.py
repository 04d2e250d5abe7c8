"""Evaluations behind ``python -m phijax.evaluate`` (``evaluate``) and
``python -m phijax.generate`` (``generate``); ``model_source`` loads the model either
command uses (a run, a phijax parameter directory or a Hugging Face directory).

- ``--task=bpb`` / ``perplexity``: held-out loss, perplexity and bits per byte with
  the training loop's eval step (``phijax.train.perplexity``, so the numbers equal a
  run's final evaluation), and the gzip baseline;
- ``exercises``, ``arithmetic``: the tasks of those names (``add_args``, ``run``);
- ``preferences``: held-out preference pairs scored by a model, and by DPO's implicit
  reward against a reference (an experiment's in-process ``EVALS`` function);
- ``execute``: runs each program in its own sandboxed subprocess (limits, timeout,
  process-group kill, a guard against destructive calls) and reports a ``Result``;
- ``passk``: the unbiased pass@k estimator of Chen et al. (2021) and its table;
- ``code_tasks``: HumanEval and MBPP-format problems, check programs, stop strings
  and ``score`` (completions in, pass@k and per-sample rows out).
"""
