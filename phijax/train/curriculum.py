"""Curriculum: everything that changes over a run, as a pure function of its position.

A run's position is ``(step, tokens)``: the steps completed and the tokens consumed
before the step about to run (the train loop saves both in checkpoints).
``Curriculum(config).at(step, tokens)`` is the plan for that step: sequence length,
learning rate, data-mixture stage. It reads nothing but the position and the config,
so a resumed run gets the same plans, and stage switches land on the same step.

Three parts, all under ``config.curriculum`` (defaults in ``defaults()``):

- ``seq_warmup``: sequence-length warmup (Li, Zhang & He 2022, "The Stability-
  Efficiency Dilemma"). Pacing ``linear`` / ``root`` follows DeepSpeed's
  ``fixed_linear`` / ``fixed_root``::

      len = floor((t / T) ** (1 / degree) * (max - start) + start)
      len -= len % step_size                  # a multiple of step_size ...
      len = max(len, ceil(start / step_size) * step_size)   # ... never below start
      len = min(len, max)                                   # (DeepSpeed PR #8334)

  ``t`` is the steps (or tokens) done before this step, ``T`` the warmup duration in
  the same unit (``duration_unit="fraction"``: that fraction of ``train.steps``, or
  of ``train.tokens`` when the run is budgeted in tokens). ``discrete`` follows
  ``fixed_discrete``: ``lengths[i]`` while ``t <= boundaries[i]``, then the last.
  The paced length is then snapped *down* to a bucket (``buckets``: ``pow2``,
  ``multiple:128``, ``none`` or an explicit ``"64,128,256"``; the start and the max
  are always buckets), so a run compiles one step per bucket it visits:
  ``log2(max / start) + 1`` at most with ``pow2``. Discrete lengths are their own
  buckets. ``shorten_batch`` cuts a full-length batch to the planned length;
  evaluation always runs at full length (``Curriculum.eval_seq_len``).

- ``lr``: ``peak = config.optim.lr``; a step-based linear warmup (``warmup_steps``, or
  ``warmup_fraction`` of the run's steps), then ``cosine`` / ``linear`` to
  ``end_lr`` (default ``min_ratio * peak``), ``constant``, ``rsqrt`` (inverse square
  root after warmup), or ``wsd`` (warmup, stable, then ``exp`` or ``linear`` decay
  over the last ``decay_fraction`` of the run; MiniCPM). With sequence-length warmup
  on (or a token budget) and ``token_based_decay``, the decay runs over *tokens*
  (Megatron-DeepSpeed ``--lr-decay-tokens``): from the tokens seen when warmup ends
  to the run's total tokens, so short early batches do not use up the schedule.

- ``stages`` + ``stage_order``: named stages (``stage(...)`` builds one), each with a
  length in steps, tokens or a fraction of the run, a data mixture over
  ``config.data.sources`` and optionally its own LR rule (e.g. a MiniCPM anneal on
  high-quality data). The last stage runs until training ends. No stages: one stage
  ``"main"`` with the sources' own weights.

Tokens per step follow from the sequence length (``batch_size * len`` when
truncating, ``batch_size * max`` when reshaping), so the whole trajectory of
``(step, tokens)`` is fixed by the config. ``Curriculum`` computes it once, piecewise
(one piece per length), to know when warmup ends in tokens, when a token-budgeted run
finishes (``total_steps_estimate``) and where each stage starts.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Mapping

import numpy as np
from ml_collections import ConfigDict, config_dict

PACINGS = ("linear", "root", "discrete")
DURATION_UNITS = ("fraction", "steps", "tokens")
SEQ_MODES = ("truncate", "reshape")
LR_SCHEDULES = ("cosine", "linear", "constant", "rsqrt", "wsd")
WSD_DECAYS = ("exp", "linear")
STAGE_UNITS = ("fraction", "steps", "tokens")
STAGE_LR_SCHEDULES = ("", "constant", "linear", "cosine", "exp")


class CurriculumError(ValueError):
  """A curriculum config that cannot run; the message names the field."""


# ----------------------------------------------------------------------------- config


def stage(length: float = 0.0, unit: str = "fraction", weights="", *,
          lr_scale: float = 1.0, lr_schedule: str = "",
          end_ratio: float | None = None) -> ConfigDict:
  """One curriculum stage, for ``config.curriculum.stages.<name>``.

  Args:
    length: how long the stage lasts, in ``unit``; the last stage ignores it and runs
      until training ends.
    unit: ``fraction`` (of the run: of ``train.steps``, or of ``train.tokens`` when
      budgeted in tokens), ``steps`` or ``tokens``. A stage lasts at least its length:
      it ends before the first step that starts at or past it.
    weights: the data mixture, ``"name:weight,..."`` over ``config.data.sources``
      (or a mapping); ``""``: the sources' own weights. Sources not named get 0.
    lr_scale: multiplies the learning rate while the stage runs.
    lr_schedule: ``""`` follows the global schedule; ``constant`` / ``linear`` /
      ``cosine`` / ``exp`` replace it inside the stage, going from the global
      schedule's value at the stage's start to ``end_ratio * peak`` at its end
      (warmup, being step-based, still applies).
    end_ratio: where ``lr_schedule`` ends, as a fraction of peak LR (None: the global
      end, ``lr.end_lr`` or ``lr.min_ratio * peak``).
  """
  if isinstance(weights, Mapping):
    weights = ",".join(f"{k}:{v}" for k, v in weights.items())
  return ConfigDict(dict(
      length=float(length), unit=unit, weights=weights, lr_scale=float(lr_scale),
      lr_schedule=lr_schedule,
      end_ratio=config_dict.placeholder(float) if end_ratio is None else float(end_ratio)))


def defaults() -> ConfigDict:
  """``config.curriculum``: every field a str/int/float/bool, so all overridable."""
  return ConfigDict(dict(
      seq_warmup=ConfigDict(dict(
          enabled=False,  # sequence-length warmup (Li et al. 2022): short rows first
          kind="linear",  # linear | root | discrete
          start=64,  # first length (8 for small models, 64 at billion scale: the paper)
          max=0,  # final length; 0 = data.seq_len
          step_size=8,  # lengths are multiples of this (8: tensor cores)
          degree=2,  # root pacing: len grows as (t/T)^(1/degree)
          duration=0.3,  # warmup length T, in duration_unit
          duration_unit="fraction",  # fraction (of the run) | steps | tokens
          lengths="",  # discrete: "64,128,256"
          boundaries="",  # discrete: "1000,2000" (one fewer; in duration_unit)
          buckets="pow2",  # pow2 | multiple:N | none | "64,128,256"
          mode="truncate",  # truncate (drop each row's tail) | reshape (keep tokens)
      )),
      lr=ConfigDict(dict(
          schedule="cosine",  # cosine | linear | constant | rsqrt | wsd
          warmup_steps=0,  # linear warmup, in steps (always step-based)
          warmup_fraction=0.0,  # ... or this fraction of the run's steps
          min_ratio=0.1,  # end LR as a fraction of peak (cosine, linear, wsd)
          end_lr=config_dict.placeholder(float),  # absolute end LR; overrides min_ratio
          decay_fraction=0.1,  # wsd: decay over this last fraction of the run
          wsd_decay="exp",  # exp | linear
          token_based_decay=True,  # decay over tokens with seq warmup or a token budget
      )),
      stages=ConfigDict(),  # name -> stage(...); see stage()
      stage_order="",  # "pretrain,anneal": required with more than one stage
  ))


def _field(path: str, value) -> str:
  return f"curriculum.{path}={value!r}"


def _choice(path: str, value, choices) -> str:
  if value not in choices:
    raise CurriculumError(f"{_field(path, value)} is unknown; choose one of "
                          f"{', '.join(repr(c) for c in choices)}")
  return value


def _number_list(path: str, spec, kind=float) -> list:
  """A comma-separated string (command-line friendly) or a list of numbers."""
  items = ([s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str)
           else list(spec))
  try:
    values = [float(s) for s in items]
  except (TypeError, ValueError):
    raise CurriculumError(f"{_field(path, spec)} is not a comma-separated list of "
                          "numbers") from None
  if kind is int:
    if any(v != int(v) for v in values):
      raise CurriculumError(f"{_field(path, spec)} must be whole numbers")
    return [int(v) for v in values]
  return values


def parse_weights(spec, field: str, sources: Mapping) -> dict[str, float]:
  """``"a:0.7,b:0.3"`` (or a mapping; ``""``: the sources' own weights) -> weights
  over every name in ``sources`` (config.data.sources), normalized to sum 1."""
  names = list(sources)
  raw = {}
  if isinstance(spec, str):
    for item in (s.strip() for s in spec.split(",")):
      if not item:
        continue
      name, _, value = item.partition(":")
      try:
        raw[name.strip()] = float(value)
      except ValueError:
        raise CurriculumError(f"{field}={spec!r}: {item!r} is not name:weight "
                              "(e.g. \"web:0.7,code:0.3\")") from None
  else:
    items = spec.items() if hasattr(spec, "items") else spec
    raw = {str(k): float(v) for k, v in items}
  if not raw:
    raw = {n: float(sources[n].weight) for n in names}
  unknown = sorted(set(raw) - set(names))
  if unknown:
    raise CurriculumError(
        f"{field}={spec!r} names data source(s) {unknown} that config.data.sources does "
        f"not define (it has {names}); add the source or fix the name")
  negative = {n: w for n, w in raw.items() if w < 0}
  if negative:
    raise CurriculumError(f"{field}={spec!r} has negative weights {negative}")
  total = sum(raw.values())
  if total <= 0:
    raise CurriculumError(f"{field}={spec!r}: every weight is 0; give at least one "
                          "source a positive weight")
  return {n: raw.get(n, 0.0) / total for n in names}


# ----------------------------------------------------------------------------- lengths


def paced_length(t: float, total: float, start: int, max_len: int, step_size: int,
                 degree: float = 1.0) -> int:
  """DeepSpeed ``fixed_root`` (``degree=1``: ``fixed_linear``) with the PR #8334 floor:
  the first multiple of ``step_size`` at or above ``start``, so never below start."""
  frac = min(float(t) / total, 1.0)  # past T the length is max either way
  length = math.floor(frac ** (1.0 / degree) * (max_len - start) + start)
  length -= length % step_size
  length = max(length, -(-start // step_size) * step_size)
  return min(length, max_len)


def discrete_length(t: float, lengths, boundaries) -> int:
  """DeepSpeed ``fixed_discrete``: ``lengths[i]`` while ``t <= boundaries[i]``."""
  for length, boundary in zip(lengths, boundaries):
    if t <= boundary:
      return length
  return lengths[-1]


def _bucket_candidates(spec: str, low: int, high: int) -> list[int] | None:
  """Sorted lengths a paced length snaps down to (None: no snapping)."""
  path = "seq_warmup.buckets"
  if spec == "none":
    return None
  if spec == "pow2":
    inner = [1 << k for k in range(1, high.bit_length() + 1)]
  elif spec.startswith("multiple:"):
    try:
      every = int(spec.split(":", 1)[1])
    except ValueError:
      every = 0
    if every <= 0:
      raise CurriculumError(f"{_field(path, spec)}: write multiple:N with N > 0, "
                            "e.g. multiple:128")
    inner = list(range(every, high + 1, every))
  elif spec and (spec[0].isdigit()):
    inner = _number_list(path, spec, int)
    if inner != sorted(set(inner)) or inner[0] < low or inner[-1] > high:
      raise CurriculumError(f"{_field(path, spec)} must be increasing lengths between "
                            f"the start {low} and the max {high}")
  else:
    raise CurriculumError(f"{_field(path, spec)} is unknown; choose 'pow2', "
                          "'multiple:N', 'none' or a list like '64,128,256'")
  return sorted({low, high} | {b for b in inner if low < b < high})


@dataclasses.dataclass(frozen=True)
class _Segment:
  """Steps ``[step, next segment's step)`` run at one length."""
  step: int  # first step
  tokens: int  # tokens consumed before it
  seq_len: int
  tokens_per_step: int


class _Trajectory:
  """``(step, tokens)`` along the run, piecewise: tokens per step is constant while
  the length is, and the length only grows, so a few pieces describe any run."""

  def __init__(self, segments: list[_Segment]):
    self.segments = segments
    self._steps = [s.step for s in segments]
    self._tokens = [s.tokens for s in segments]

  def segment_at_step(self, step: int) -> _Segment:
    return self.segments[bisect.bisect_right(self._steps, step) - 1]

  def tokens_at(self, step: int) -> int:
    seg = self.segment_at_step(step)
    return seg.tokens + (step - seg.step) * seg.tokens_per_step

  def first_step_reaching(self, tokens: float) -> int:
    """The first step that starts with at least ``tokens`` consumed."""
    seg = self.segments[max(bisect.bisect_right(self._tokens, tokens) - 1, 0)]
    return seg.step + max(0, math.ceil((tokens - seg.tokens) / seg.tokens_per_step))


# ----------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the step at position ``(step, tokens)`` runs with."""
  step: int
  tokens: int
  seq_len: int  # training length (bucketed); evaluation uses the full length
  lr: float
  stage: int  # index in stage order
  stage_name: str
  weights: dict  # source name -> share of tokens (sums to 1)
  done: bool  # training has finished (by steps or by tokens)
  tokens_per_step: int  # tokens this step consumes (rows * columns of its batch)

  def scalars(self) -> dict[str, float]:
    """What to log per step (TensorBoard / metrics.jsonl): the plot's quantities."""
    return {"lr": self.lr, "seq_len": self.seq_len, "stage": self.stage,
            **{f"mix/{name}": w for name, w in self.weights.items()}}


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  unit: str  # "steps" or "tokens" (fractions resolved against the budget)
  start_step: int
  start_tokens: int
  end: float  # in unit: the stage ends before the first step starting at or past it
  weights: dict
  lr_scale: float
  lr_schedule: str
  end_ratio: float  # lr_schedule's end, fraction of peak


class Curriculum:
  """Validates ``config.curriculum`` against the run and answers ``at(step, tokens)``.

  Raises ``CurriculumError`` (a ``ValueError``) naming the field on a bad config.
  """

  def __init__(self, config):
    cur = config.curriculum
    self.batch_size = int(config.train.batch_size)
    if self.batch_size <= 0:
      raise CurriculumError(f"train.batch_size={self.batch_size} must be positive")
    self.budget_unit, self.budget = _budget(config.train)
    self.eval_seq_len = int(config.data.seq_len)
    self._parse_seq_warmup(cur.seq_warmup, self.eval_seq_len)
    self.trajectory = self._simulate()
    if self.budget_unit == "steps":
      self.total_steps = int(self.budget)
      self.total_tokens = self.trajectory.tokens_at(self.total_steps)
    else:
      self.total_tokens = int(self.budget)
      self.total_steps = self.trajectory.first_step_reaching(self.total_tokens)
    self._buckets = sorted({s.seq_len for s in self.trajectory.segments
                            if s.step < max(self.total_steps, 1)})
    if self.seq_mode == "reshape":
      bad = [b for b in self._buckets if self.eval_seq_len % b]
      if bad:
        raise CurriculumError(
            f"{_field('seq_warmup.mode', 'reshape')} splits each row of data.seq_len="
            f"{self.eval_seq_len} into equal rows, but lengths {bad} do not divide it; "
            "use buckets='pow2' with a power-of-two seq_len, or mode='truncate'")
    self._parse_lr(cur.lr, float(config.optim.lr))
    self._parse_stages(cur, config.data.sources)

  # --- sequence length

  def _parse_seq_warmup(self, sw, data_len: int):
    self.seq_mode = _choice("seq_warmup.mode", sw.mode, SEQ_MODES)
    self.seq_warmup = bool(sw.enabled)
    self.max_len = (int(sw.max) or data_len) if self.seq_warmup else data_len
    if not self.seq_warmup:
      self._length_at = lambda step, tokens: self.max_len
      self._final_len, self._horizon = self.max_len, 0.0
      return
    if self.max_len > data_len:
      raise CurriculumError(f"{_field('seq_warmup.max', sw.max)} is above data.seq_len="
                            f"{data_len}, the length the data pipeline makes")
    kind = _choice("seq_warmup.kind", sw.kind, PACINGS)
    unit = _choice("seq_warmup.duration_unit", sw.duration_unit, DURATION_UNITS)
    # Fractions are of the run's budget, in its own unit: no circularity.
    self._pace_unit = self.budget_unit if unit == "fraction" else unit
    scale = self.budget if unit == "fraction" else 1.0
    if kind == "discrete":
      lengths = _number_list("seq_warmup.lengths", sw.lengths, int)
      bounds = _number_list("seq_warmup.boundaries", sw.boundaries, float)
      if not lengths or len(bounds) != len(lengths) - 1:
        raise CurriculumError(
            f"{_field('seq_warmup.lengths', sw.lengths)} needs one more entry than "
            f"{_field('seq_warmup.boundaries', sw.boundaries)} (lengths[i] runs while "
            "t <= boundaries[i], the last one after)")
      if lengths != sorted(lengths) or lengths[0] <= 0 or lengths[-1] > self.max_len:
        raise CurriculumError(f"{_field('seq_warmup.lengths', sw.lengths)} must be "
                              f"non-decreasing lengths in [1, {self.max_len}] (the max)")
      if bounds != sorted(set(bounds)) or (bounds and bounds[0] < 0):
        raise CurriculumError(f"{_field('seq_warmup.boundaries', sw.boundaries)} must be "
                              "increasing and non-negative")
      if unit == "fraction" and bounds and bounds[-1] > 1:
        raise CurriculumError(f"{_field('seq_warmup.boundaries', sw.boundaries)} are "
                              "fractions of the run (duration_unit='fraction'): keep them <= 1")
      bounds = [b * scale for b in bounds]
      self._pace = lambda t: discrete_length(t, lengths, bounds)
      self._final_len = lengths[-1]
      self._horizon = math.floor(bounds[-1]) + 1 if bounds else 0.0
      self._snap = lambda n: n
    else:
      start, step_size = int(sw.start), int(sw.step_size)
      degree = 1.0 if kind == "linear" else float(sw.degree)
      if step_size <= 0:
        raise CurriculumError(f"{_field('seq_warmup.step_size', step_size)} must be positive")
      if start <= 0 or start > self.max_len:
        raise CurriculumError(
            f"{_field('seq_warmup.start', start)} must be in [1, max={self.max_len}] "
            "(seq_warmup.max, 0 = data.seq_len); lower start or raise max")
      if self.max_len % step_size:
        raise CurriculumError(
            f"{_field('seq_warmup.step_size', step_size)} does not divide the max length "
            f"{self.max_len}: lengths are multiples of step_size, so the max would never "
            "be reached; pick a divisor")
      if degree <= 0:
        raise CurriculumError(f"{_field('seq_warmup.degree', sw.degree)} must be positive")
      duration = float(sw.duration)
      if duration <= 0 or (unit == "fraction" and duration > 1):
        raise CurriculumError(
            f"{_field('seq_warmup.duration', sw.duration)} must be > 0"
            + (" and <= 1 (a fraction of the run)" if unit == "fraction" else ""))
      total = duration * scale
      first = min(-(-start // step_size) * step_size, self.max_len)
      candidates = _bucket_candidates(str(sw.buckets), first, self.max_len)
      self._pace = lambda t: paced_length(t, total, start, self.max_len, step_size, degree)
      self._final_len = self.max_len
      self._horizon = total
      if candidates is None:
        self._snap = lambda n: n
      else:
        self._snap = lambda n: candidates[bisect.bisect_right(candidates, n) - 1]
    self._length_at = lambda step, tokens: self._snap(
        self._pace(step if self._pace_unit == "steps" else tokens))

  def _tokens_per_step(self, seq_len: int) -> int:
    # reshape keeps every token of the full-length batch, in more, shorter rows
    return self.batch_size * (self.eval_seq_len if self.seq_mode == "reshape" else seq_len)

  def _simulate(self) -> _Trajectory:
    """One segment per length: the first step whose length differs is found by
    bisection, since lengths only grow and are final once the pacing coordinate
    reaches the horizon."""
    step, tokens = 0, 0
    segments = []
    while True:
      length = self._length_at(step, tokens)
      per_step = self._tokens_per_step(length)
      segments.append(_Segment(step, tokens, length, per_step))
      if length == self._final_len:
        return _Trajectory(segments)

      def length_after(k, step=step, tokens=tokens, per_step=per_step):
        return self._length_at(step + k, tokens + k * per_step)

      coord = step if self._pace_unit == "steps" else tokens
      rate = 1 if self._pace_unit == "steps" else per_step
      hi = max(1, math.ceil((self._horizon - coord) / rate))  # final by then
      lo = 1
      while lo < hi:  # first k in [1, hi] whose length differs
        mid = (lo + hi) // 2
        if length_after(mid) != length:
          hi = mid
        else:
          lo = mid + 1
      step, tokens = step + lo, tokens + lo * per_step

  def seq_len_at(self, step: int, tokens: int) -> int:
    return self._length_at(step, tokens)

  def buckets(self) -> list[int]:
    """Every training length this run uses, sorted (one compiled step each)."""
    return list(self._buckets)

  def total_steps_estimate(self) -> int:
    """Steps the run takes (exact when the batch size is as configured)."""
    return self.total_steps

  # --- learning rate

  def _parse_lr(self, lr, peak: float):
    self.peak_lr = peak
    self.lr_schedule = _choice("lr.schedule", lr.schedule, LR_SCHEDULES)
    self.wsd_decay = _choice("lr.wsd_decay", lr.wsd_decay, WSD_DECAYS)
    if lr.warmup_steps < 0 or not 0 <= lr.warmup_fraction < 1:
      raise CurriculumError(f"curriculum.lr.warmup_steps={lr.warmup_steps} must be >= 0 "
                            f"and lr.warmup_fraction={lr.warmup_fraction} in [0, 1)")
    if lr.warmup_steps > 0 and lr.warmup_fraction > 0:
      raise CurriculumError(f"curriculum.lr.warmup_steps={lr.warmup_steps} and "
                            f"lr.warmup_fraction={lr.warmup_fraction} are both set; set one")
    self.warmup_steps = int(lr.warmup_steps) or round(lr.warmup_fraction * self.total_steps)
    self.end_ratio = (float(lr.end_lr) / peak if lr.end_lr is not None and peak > 0
                      else float(lr.min_ratio))
    if self.end_ratio < 0:
      raise CurriculumError(f"curriculum.lr end (min_ratio={lr.min_ratio}, "
                            f"end_lr={lr.end_lr}) must be >= 0")
    self.decay_unit = ("tokens" if lr.token_based_decay and
                       (self.seq_warmup or self.budget_unit == "tokens") else "steps")
    tokens = self.decay_unit == "tokens"
    # Decay positions, in the decay unit: warmup ends at d0, training at d1.
    self._d0 = self.trajectory.tokens_at(self.warmup_steps) if tokens else self.warmup_steps
    self._d1 = self.total_tokens if tokens else self.total_steps
    decays = self.lr_schedule in ("cosine", "linear", "wsd")
    if decays and self.warmup_steps >= self.total_steps:
      raise CurriculumError(
          f"curriculum.lr warmup ({self.warmup_steps} steps) is not shorter than the run "
          f"({self.total_steps} steps): nothing is left to decay over; shorten "
          "lr.warmup_steps (or use lr.warmup_fraction)")
    if self.lr_schedule == "rsqrt" and self.warmup_steps <= 0:
      raise CurriculumError("curriculum.lr.schedule='rsqrt' decays as sqrt(warmup / t): "
                            "set lr.warmup_steps or lr.warmup_fraction > 0")
    self._wsd_start = self._d1 - float(lr.decay_fraction) * self._d1
    if self.lr_schedule == "wsd":
      if not 0 < lr.decay_fraction <= 1:
        raise CurriculumError(f"curriculum.lr.decay_fraction={lr.decay_fraction} must be "
                              "in (0, 1]")
      if self._wsd_start < self._d0:
        raise CurriculumError(
            f"curriculum.lr.decay_fraction={lr.decay_fraction}: the decay would start "
            "before warmup ends; lower it or shorten warmup")
      if self.wsd_decay == "exp" and self.end_ratio <= 0:
        raise CurriculumError("curriculum.lr.wsd_decay='exp' decays to min_ratio * peak "
                              "geometrically: set lr.min_ratio (or end_lr) > 0")

  def _global_factor(self, step: int, tokens: int) -> float:
    """The schedule after warmup, as a fraction of peak (1 until decay starts)."""
    pos = tokens if self.decay_unit == "tokens" else step
    r, kind = self.end_ratio, self.lr_schedule
    if kind == "constant":
      return 1.0
    if kind == "rsqrt":
      return math.sqrt(self._d0 / max(pos, self._d0))
    if kind == "wsd":
      p = _progress(pos, self._wsd_start, self._d1)
      return r ** p if self.wsd_decay == "exp" else 1.0 - (1.0 - r) * p
    p = _progress(pos, self._d0, self._d1)
    if kind == "cosine":
      return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0 - (1.0 - r) * p  # linear

  def _warmup_factor(self, step: int) -> float:
    # Megatron's count: the first step runs at peak / warmup, the warmup-th at peak.
    return (step + 1) / self.warmup_steps if step < self.warmup_steps else 1.0

  def _lr(self, step: int, tokens: int, st: Stage) -> float:
    if st.lr_schedule:
      g0 = self._global_factor(st.start_step, st.start_tokens)
      pos, start = ((step, st.start_step) if st.unit == "steps"
                    else (tokens, st.start_tokens))
      q = _progress(pos, start, st.end)
      r = st.end_ratio
      factor = {"constant": lambda: g0,
                "linear": lambda: g0 + (r - g0) * q,
                "cosine": lambda: r + (g0 - r) * 0.5 * (1.0 + math.cos(math.pi * q)),
                "exp": lambda: g0 * (r / g0) ** q}[st.lr_schedule]()
    else:
      factor = self._global_factor(step, tokens)
    return self.peak_lr * self._warmup_factor(step) * factor * st.lr_scale

  # --- stages

  def _parse_stages(self, cur, sources):
    specs = dict(cur.stages.items()) if cur.stages is not None else {}
    order = [s.strip() for s in str(cur.stage_order).split(",") if s.strip()]
    if not specs:
      if order:
        raise CurriculumError(f"{_field('stage_order', cur.stage_order)} names stages, "
                              "but curriculum.stages is empty")
      specs, order = {"main": stage(0.0)}, ["main"]
    elif not order:
      if len(specs) > 1:
        raise CurriculumError(f"curriculum.stages has {sorted(specs)}: set "
                              "curriculum.stage_order, e.g. \"a,b\", to order them")
      order = list(specs)
    unknown = [n for n in order if n not in specs]
    missing = [n for n in specs if n not in order]
    if unknown or missing or len(set(order)) != len(order):
      raise CurriculumError(
          f"{_field('stage_order', cur.stage_order)} must name every stage in "
          f"curriculum.stages ({sorted(specs)}) once" +
          (f"; unknown {unknown}" if unknown else "") +
          (f"; missing {missing}" if missing else ""))
    stages = []
    step, tokens = 0, 0
    for i, name in enumerate(order):
      path = f"stages.{name}"
      spec = _stage_fields(specs[name], path)
      unit = _choice(f"{path}.unit", spec.unit, STAGE_UNITS)
      length = float(spec.length)
      if unit == "fraction":
        unit, length = self.budget_unit, length * self.budget
      last = i == len(order) - 1
      if not last and length <= 0:
        raise CurriculumError(f"{_field(path + '.length', spec.length)} must be > 0 "
                              "(only the last stage runs until training ends)")
      start = step if unit == "steps" else tokens
      end = (self.total_steps if unit == "steps" else self.total_tokens) if last \
          else start + length
      lr_schedule = _choice(f"{path}.lr_schedule", spec.lr_schedule, STAGE_LR_SCHEDULES)
      end_ratio = self.end_ratio if spec.end_ratio is None else float(spec.end_ratio)
      if lr_schedule == "exp" and end_ratio <= 0:
        raise CurriculumError(f"{_field(path + '.end_ratio', spec.end_ratio)}: an 'exp' "
                              "stage decays geometrically, so its end ratio must be > 0")
      st = Stage(name=name, unit=unit, start_step=step, start_tokens=tokens, end=end,
                 weights=parse_weights(spec.weights, f"curriculum.{path}.weights", sources),
                 lr_scale=float(spec.lr_scale), lr_schedule=lr_schedule, end_ratio=end_ratio)
      if st.lr_schedule == "exp" and self._global_factor(step, tokens) <= 0:
        raise CurriculumError(f"curriculum.{path}.lr_schedule='exp' starts where the "
                              "global schedule is 0")
      stages.append(st)
      if not last:
        step = (math.ceil(end) if unit == "steps"
                else self.trajectory.first_step_reaching(end))
        tokens = self.trajectory.tokens_at(step)
        if step >= self.total_steps:
          raise CurriculumError(
              f"curriculum stage {order[i + 1]!r} would start at step {step}, after the "
              f"run's {self.total_steps} steps; shorten the stages before it or "
              "lengthen training")
    self.stages = stages

  def _stage_index(self, step: int, tokens: int) -> int:
    i = 0
    while i < len(self.stages) - 1:
      st = self.stages[i]
      if (step if st.unit == "steps" else tokens) < st.end:
        break
      i += 1
    return i

  # --- queries

  def at(self, step: int, tokens: int) -> Plan:
    """The plan for the step that starts after ``step`` steps and ``tokens`` tokens."""
    step, tokens = int(step), int(tokens)
    if step < 0 or tokens < 0:
      raise ValueError(f"position (step={step}, tokens={tokens}) must be non-negative")
    i = self._stage_index(step, tokens)
    st = self.stages[i]
    seq_len = self._length_at(step, tokens)
    done = (step >= self.total_steps if self.budget_unit == "steps"
            else tokens >= self.total_tokens)
    return Plan(step=step, tokens=tokens, seq_len=seq_len, lr=float(self._lr(step, tokens, st)),
                stage=i, stage_name=st.name, weights=dict(st.weights), done=done,
                tokens_per_step=self._tokens_per_step(seq_len))

  def plan(self, num_steps: int | None = None, every: int = 1) -> dict[str, np.ndarray]:
    """The simulated run: arrays ``step``, ``tokens`` (before the step), ``seq_len``,
    ``lr``, ``stage``, ``tokens_per_step`` at steps ``0, every, ...`` below
    ``num_steps`` (default: until done)."""
    n = self.total_steps if num_steps is None else int(num_steps)
    rows = [self.at(s, self.trajectory.tokens_at(s)) for s in range(0, n, max(1, every))]
    return {
        "step": np.array([p.step for p in rows], np.int64),
        "tokens": np.array([p.tokens for p in rows], np.int64),
        "seq_len": np.array([p.seq_len for p in rows], np.int64),
        "lr": np.array([p.lr for p in rows], np.float64),
        "stage": np.array([p.stage for p in rows], np.int64),
        "tokens_per_step": np.array([p.tokens_per_step for p in rows], np.int64),
    }

  def describe(self) -> str:
    """A few lines for logs: budget, lengths, warmup, stage starts."""
    lines = [f"{self.total_steps} steps, {self.total_tokens:,} tokens "
             f"(budget: {self.budget:,.0f} {self.budget_unit}); batch {self.batch_size}",
             f"lengths {self.buckets()} ({self.seq_mode}"
             f"{', warmup on' if self.seq_warmup else ''}); eval at {self.eval_seq_len}",
             f"lr {self.lr_schedule}, peak {self.peak_lr:g}, warmup {self.warmup_steps} "
             f"steps, decay over {self.decay_unit}"]
    for i, st in enumerate(self.stages):
      mix = ", ".join(f"{n}:{w:.3g}" for n, w in st.weights.items() if w > 0)
      lines.append(f"stage {i} {st.name!r} from step {st.start_step} ({st.start_tokens:,} "
                   f"tokens): {mix}" + (f", lr {st.lr_schedule}" if st.lr_schedule else "")
                   + (f", lr x{st.lr_scale:g}" if st.lr_scale != 1 else ""))
    return "\n".join(lines)


def buckets(config) -> list[int]:
  """Every training sequence length ``config``'s run uses, sorted: the step variants
  to compile ahead of time (evaluation adds ``config.data.seq_len``)."""
  return Curriculum(config).buckets()


def _stage_fields(spec, path: str) -> ConfigDict:
  """A stage's fields with stage()'s defaults for those left out; unknown keys fail."""
  full = stage()
  unknown = sorted(set(spec.keys()) - set(full.keys()))
  if unknown:
    raise CurriculumError(f"curriculum.{path} has unknown fields {unknown}; a stage has "
                          f"{sorted(full.keys())}")
  fields = {k: full[k] for k in full.keys()}
  fields.update({k: spec[k] for k in spec.keys()})
  return ConfigDict(fields, type_safe=False)


def _progress(pos: float, start: float, end: float) -> float:
  if end <= start:
    return 1.0
  return min(max((pos - start) / (end - start), 0.0), 1.0)


def _budget(train) -> tuple[str, float]:
  if int(train.tokens) > 0:
    return "tokens", float(int(train.tokens))
  if int(train.steps) > 0:
    return "steps", float(int(train.steps))
  raise CurriculumError(f"train.steps={train.steps} and train.tokens={train.tokens}: set "
                        "one of them > 0 (tokens > 0 budgets the run in tokens)")


# ----------------------------------------------------------------------------- batches


def shorten_batch(batch: Mapping[str, np.ndarray], seq_len: int,
                  mode: str = "truncate") -> dict[str, np.ndarray]:
  """Cuts a ``[B, L]`` batch (every ``[B, L, ...]`` array) to length ``seq_len``.

  ``truncate`` keeps each row's first ``seq_len`` columns: ``[B, seq_len]`` (the
  paper; the tail's tokens are not trained on). ``reshape`` keeps every token: each
  row is cut into ``L / seq_len`` consecutive rows, ``[B * L / seq_len, seq_len]``.
  ``positions`` keep their original values (RoPE only sees differences, and LongRoPE
  sees the same positions as at full length) and ``segment_ids`` are unchanged: each
  new row is attended on its own, so a document cut at a row boundary simply goes on
  in the next row, without the context before the cut. ``targets`` move with their
  inputs, so every (input, target) pair is trained on. ``[B]`` arrays are repeated
  per new row.
  """
  _choice("seq_warmup.mode", mode, SEQ_MODES)
  if "inputs" not in batch:
    raise ValueError(f"batch has no 'inputs' (keys {sorted(batch)})")
  rows, length = batch["inputs"].shape[:2]
  if seq_len == length:
    return dict(batch)
  if not 0 < seq_len <= length:
    raise ValueError(f"cannot shorten a batch of length {length} to {seq_len}")
  if mode == "reshape" and length % seq_len:
    raise ValueError(f"reshape needs seq_len={seq_len} to divide the batch length {length}")
  pieces = length // seq_len
  out = {}
  for key, x in batch.items():
    x = np.asarray(x)
    if x.ndim >= 2 and x.shape[:2] == (rows, length):
      if mode == "truncate":
        out[key] = np.ascontiguousarray(x[:, :seq_len])
      else:  # row-major: row b becomes rows b*pieces ... b*pieces + pieces - 1
        out[key] = x.reshape(rows * pieces, seq_len, *x.shape[2:])
    elif x.shape == (rows,):
      out[key] = x if mode == "truncate" else np.repeat(x, pieces)
    else:
      raise ValueError(f"batch[{key!r}] has shape {x.shape}; expected [{rows}, {length}, "
                       f"...] like 'inputs', or [{rows}]")
  return out
