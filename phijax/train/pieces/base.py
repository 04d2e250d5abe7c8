"""The protocol between the training loop and its pieces: ``Piece`` (the moments),
``Run`` (what a piece reads and may change) and ``Clock`` (the tokens/s window)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from phijax.train import checkpoint


class Piece:
  """One capability of a run. The loop calls every piece at each moment, in the order
  the pieces were registered; a piece defines only the moments it needs (a class
  need not derive from this one: a missing method is skipped).

  - ``on_start(run)``: after compilation, before the first step.
  - ``after_step(run)``: the step's update is done: ``run.step`` counts it,
    ``run.metrics`` holds its (device) metrics, ``run.plan`` is still its plan.
  - ``between_steps(run)``: ``run.plan`` is the next step's (``run.plan.done`` at the
    last); not reached after a step whose ``after_step`` stopped the run.
  - ``on_eval(run, ev)``: a held-out evaluation's results, at ``run.step`` (0 for the
    starting model's), after its metrics row is written.
  - ``on_end(run)``: the steps are over, ``run.outcome`` says how; metric sinks are
    still open.
  - ``after_end(run)``: metric sinks are closed (``metrics.jsonl`` complete).

  A piece that is also a context manager is entered around the steps (after
  ``on_start``, left before ``on_end``, on an error too). ``run.stop(reason)`` stops
  the run after the current moment; every piece still gets that moment.
  """

  def on_start(self, run: Run) -> None:
    pass

  def after_step(self, run: Run) -> None:
    pass

  def between_steps(self, run: Run) -> None:
    pass

  def on_eval(self, run: Run, ev: dict) -> None:
    pass

  def on_end(self, run: Run) -> None:
    pass

  def after_end(self, run: Run) -> None:
    pass


class Clock:
  """The tokens/s window: tokens trained since the last logged step over the seconds
  they took, less what measurements in between took (probes, evaluations)."""

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self.start, self.tokens = time.perf_counter(), 0

  def add(self, tokens: int) -> None:
    self.tokens += tokens

  def exclude(self, seconds: float) -> None:
    self.start += seconds

  def restart(self) -> None:
    """The time so far leaves the window, its tokens stay (after an evaluation, which
    follows a logged step when ``log_every`` divides ``eval_every``)."""
    self.start = time.perf_counter()

  def tokens_per_sec(self) -> float:
    return self.tokens / max(time.perf_counter() - self.start, 1e-9)


@dataclasses.dataclass(eq=False)
class Run:
  """A run in progress, as the loop and its pieces see it. The loop sets the position
  (``step``, ``tokens``, ``stage``, ``plan``), ``state``, ``metrics`` and the batch;
  pieces read them, write rows to ``writer`` and lines to ``progress``, and may
  ``stop`` the run or set ``result`` / ``error`` at its end."""

  config: Any
  workdir: str
  model_cfg: Any
  mesh: Any
  tok: Any
  cur: Any  # curriculum.Curriculum
  fns: Any  # step.StepFns
  objective: Any  # objectives.LanguageModeling or a subclass
  ckpt: checkpoint.Checkpointer
  state: Any  # step.TrainState
  step: int
  tokens: int
  stage: int
  plan: Any  # curriculum.Plan: the step's (after it, the next step's)
  restored_step: int  # the checkpoint's step resumed from, -1 when fresh
  progress: Any  # metrics.Progress
  opt_bytes: float  # optimizer state bytes per parameter
  peak_flops: float  # of the local devices, 0 when unknown (no MFU)
  iterator: Any = None  # the data stream of the current stage
  writer: Any = None  # metrics.Writer: metrics.jsonl, TensorBoard, W&B
  clock: Clock = dataclasses.field(default_factory=Clock)
  batch: Any = None  # the step's batch on the devices
  seq_len: int = 0  # the step's sequence length
  batch_tokens: int = 0  # the step's tokens, over the global batch
  metrics: Any = None  # the step's metrics, on the devices
  stop_reason: str | None = None
  failed: bool = False
  error: BaseException | None = None  # raised by the loop after the end
  result: dict | None = None  # what train() returns
  pieces: list = dataclasses.field(default_factory=list)
  started: float = 0.0  # time.time() when train() was called (train.time_budget_s)

  @property
  def train(self):
    return self.config.train

  @property
  def outcome(self) -> str:
    """``finished``; ``stopped`` (resumable: a signal, or a piece's ``stop``); or
    ``failed`` (``stop(..., failed=True)``: no final checkpoint)."""
    if self.stop_reason is None:
      return "finished"
    return "failed" if self.failed else "stopped"

  def stop(self, reason: str, failed: bool = False) -> None:
    if self.stop_reason is None:
      self.stop_reason, self.failed = reason, failed

  def call(self, moment: str, *args) -> None:
    """Every piece's ``moment``, in order."""
    for piece in self.pieces:
      fn = getattr(piece, moment, None)
      if fn is not None:
        fn(self, *args)

  def meta(self) -> dict:
    """A checkpoint's ``meta`` item: the position and the data iterator's state."""
    return {"step": self.step, "tokens": self.tokens, "stage": self.stage,
            "data_state": (checkpoint.encode_iterator_state(self.iterator.get_state())
                           if self.iterator else None),
            "model": self.model_cfg.to_dict()}
