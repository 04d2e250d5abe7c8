"""Sweeps: many runs of one experiment, and what they show.

Modules, in the order a sweep uses them:

  arms.py     the experiment file, its arms (names, overrides, references between
              them) and ``sweep.json``, the record of them the results read
  status.py   each arm's ``sweep_status.json``: done, running, failed, ...
  runner.py   starts the arms as training processes (local, or through a launcher)
  command.py  ``python -m phijax.sweep``: the command line
  runs.py     one run directory's numbers (``metrics.jsonl`` summarized)
  tables.py   the table of every arm, seeds collapsed, as markdown
  figures.py  ``curves.png`` and ``final.png``
  results.py  ``python -m phijax.results``: writes the tables and figures

The runner uses the results; the results never import the runner: they read
``sweep.json`` and the status files.
"""
