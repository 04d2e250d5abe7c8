"""The pieces of a training run, each with one job, that the loop
(``phijax.train.loop``) calls at named moments (``Piece``'s docstring says when):

    on_start                      after compilation
    after_step, between_steps     each step (the stop flag is asked between steps)
    on_eval                       each held-out evaluation during the run
    on_end                        the steps are over; metric sinks still open
    after_end                     metric sinks closed

``builtin`` lists a run's own pieces; ``train(config, workdir, pieces=[...])`` adds
more, called after these at every moment. A new capability is a ``Piece`` subclass
(any object with some of the moment methods) and one line in ``builtin``, or in the
``pieces`` argument; the loop itself does not change. What a piece reads and may
change is the ``Run`` (its position, state, step metrics, ``writer``, ``progress``).

Modules by job: ``base`` (the protocol: ``Piece``, ``Run``, ``Clock``),
``evaluation``, ``checkpoints``, ``stop`` (signals, non-finite steps), ``logs``
(step rows and progress, probes, the plot), ``samples``, ``provenance``,
``time_budget`` (a wall-clock budget fixes the number of steps).
"""

from phijax.train.pieces.base import Clock, Piece, Run
from phijax.train.pieces.checkpoints import BestCheckpoints, Checkpoints
from phijax.train.pieces.evaluation import Done, Evaluation, FinalEval
from phijax.train.pieces.logs import Plot, Probes, StepLog
from phijax.train.pieces.provenance import Provenance
from phijax.train.pieces.samples import Samples
from phijax.train.pieces.time_budget import TimeBudget
from phijax.train.pieces.stop import NonFinite, NonFiniteError, Stop, StopFlag

__all__ = ["BestCheckpoints", "Checkpoints", "Clock", "Done", "Evaluation", "FinalEval",
           "NonFinite", "NonFiniteError", "Piece", "Plot", "Probes", "Provenance", "Run",
           "Samples",
           "StepLog", "Stop", "StopFlag", "builtin"]


def builtin(run: Run) -> list:
  """A run's own pieces, in the order every moment calls them. The order is what the
  run's outputs depend on: within a step, probe rows come before the step's row, and
  the non-finite check before it (the failing step is logged); between steps, the
  evaluation, then the checkpoint, then the stop flag; at the end, the best
  checkpoints close, the last checkpoint is saved (``NonFinite``'s error names it),
  a stopped run says so before the progress bar ends, then the final evaluation;
  after the metric sinks close, samples, the plot and the last line."""
  evaluation = Evaluation()
  final = FinalEval(evaluation)
  pieces = [
      Provenance(),  # provenance.json: commit, command, corpus, tokenizer, versions
      evaluation,  # train.eval_at_start, train.eval_every
      Probes(),  # train.sharpness_every
      BestCheckpoints(run) if run.train.keep_best else None,
      Checkpoints(run),  # train.save_every, train.save_every_minutes, the last one
      NonFinite(),  # train.max_nonfinite
      Stop(),  # SIGTERM, SIGINT
      StepLog(),  # train.log_every, the progress bar
      TimeBudget(run) if run.train.time_budget_s else None,  # times steps, fixes the plan
      final,
      Samples(),  # train.samples
      Plot(),
      Done(final),
  ]
  return [p for p in pieces if p is not None]
