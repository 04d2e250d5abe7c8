"""Sweeps: many runs of one experiment, and what they show.

``runner`` starts the arms (``python -m phijax.sweep``) and ``results`` reads their run
directories into tables, paired statistics, verdicts and figures
(``python -m phijax.results``). The runner uses results; results never import the
runner.
"""
