"""The training loop: ``train(config, workdir)`` sets a run up, then steps and calls
its pieces at named moments. Its command line is ``phijax.train.command``
(``python -m phijax.train``)."""

from __future__ import annotations

import contextlib
import logging
import os
import time

import jax
import jax.numpy as jnp

from phijax import data
from phijax.config_files import ConfigError  # noqa: F401  (re-exported: train.ConfigError)
from phijax.model import lora, sharding
from phijax.model.config import ModelConfig
from phijax.model.transformer import count_params
from phijax.train import (checkpoint, curriculum, distributed, metrics, objectives, optim,
                          pieces as pieces_lib, setup, wandb_log)
# NonFiniteError is re-exported (phijax.train.NonFiniteError).
from phijax.train.pieces import NonFiniteError, Run  # noqa: F401
from phijax.train.pieces import time_budget
from phijax.data import hosts
from phijax.train.step import build, device_batch

log = logging.getLogger("phijax")


def train(config, workdir: str, pieces=()) -> dict:
  """Runs (or resumes) training; returns the final summary dict.

  The loop steps; evaluations, checkpoints, logs, probes, the stop flag and the
  end-of-run outputs are pieces (``phijax.train.pieces``) it calls at named moments.
  ``pieces``: more of them, called after the run's own at every moment."""
  started = time.time()  # train.time_budget_s counts from here
  run = _prepare(config, workdir)
  run.started = started
  if run.plan.done:
    return _already_finished(run)
  # After the finished-run exit, so a rerun of a finished run opens no W&B run; before
  # compilation, so a W&B login problem shows at once.
  run.writer = metrics.Writer(run.workdir, sinks=wandb_log.sinks(config, run.workdir))
  run.pieces = pieces_lib.builtin(run) + list(pieces)
  train_step = _TrainStep(run)
  run.call("on_start")
  with contextlib.ExitStack() as around_steps:
    for piece in run.pieces:
      if isinstance(piece, contextlib.AbstractContextManager):
        around_steps.enter_context(piece)  # the stop flag's signal handlers
    while not run.plan.done and run.stop_reason is None:
      _step(run, train_step)
      run.call("after_step")
      if run.stop_reason is not None:
        break
      run.plan = run.cur.at(run.step, run.tokens)
      run.call("between_steps")
  run.call("on_end")
  run.writer.close()
  run.call("after_end")
  if run.error is not None:
    raise run.error
  if run.outcome == "failed":  # a piece's stop(..., failed=True) that set no error
    raise RuntimeError(f"the run failed at step {run.step}: {run.stop_reason}")
  return run.result


def _step(run: Run, train_step) -> None:
  """One training step: the next batch (from a new data stream at a curriculum stage
  switch), the update, and the position after it."""
  if run.iterator is None or run.plan.stage != run.stage:  # a stage switch: new mixture
    if run.iterator is not None and hasattr(run.iterator, "close"):
      run.iterator.close()  # stops grain worker processes, if any
    run.stage = run.plan.stage
    run.iterator = run.objective.train_iterator(run.plan)
  full = next(run.iterator)
  batch = curriculum.shorten_batch(full, run.plan.seq_len, run.cur.seq_mode)
  local, run.seq_len = batch["inputs"].shape
  # This host's rows of the global batch (all of them on one process); seq warmup's
  # reshape mode cuts each row into `pieces` consecutive rows.
  pieces = local // full["inputs"].shape[0]
  rows = run.train.batch_size * pieces if run.objective.rows is not None else local
  run.batch = device_batch(batch, run.fns.batch_sharding, run.objective.batch_keys,
                           rows=hosts.split_rows(run.objective.rows, pieces),
                           global_rows=rows)
  run.state, run.metrics = train_step(run.state, run.batch, jnp.float32(run.plan.lr))
  run.step += 1
  run.batch_tokens = rows * run.seq_len  # the global batch
  run.tokens += run.batch_tokens
  run.clock.add(run.batch_tokens)


class _TrainStep:
  """The train step, one compiled variant per batch shape. With ``train.aot_compile``
  every sequence-length bucket is compiled ahead of time, so a length change mid-run
  never stalls on a compile (and the count is known up front)."""

  def __init__(self, run: Run):
    t, cur = run.train, run.cur
    self.fns, self.step_args = run.fns, run.objective.step_args
    self.variants = {}
    start = time.perf_counter()
    if t.aot_compile:
      for length in cur.buckets():
        rows = t.batch_size * (cur.eval_seq_len // length if cur.seq_mode == "reshape" else 1)
        self.variants[(rows, length)] = self.fns.compile_train_step(rows, length)
      run.progress.write(f"compiled {len(self.variants)} train-step variant(s) for lengths "
                         f"{cur.buckets()} in {time.perf_counter() - start:.1f}s")

  def __call__(self, state, batch, lr):
    shape = batch["inputs"].shape
    fn = self.variants.get(shape)
    if fn is None:  # not planned (aot_compile off, or an unplanned shape): jit compiles
      log.info("compiling a train step for batch shape %s", shape)
      fn = self.variants[shape] = self.fns.compile_train_step(*shape)
    return fn(state, batch, lr, *self.step_args)


def _run_directory(config, workdir: str):
  """The checks, then the run directory's tokenizer and config.json:
  ``(mesh, rules, model_cfg, tok, curriculum, epochs_note)``."""
  setup.enable_compilation_cache(config.train.compile_cache_dir)
  with _removed_if_left_empty(workdir):
    return _checked_run_directory(config, workdir)


@contextlib.contextmanager
def _removed_if_left_empty(workdir: str):
  """A start refused by its checks (a missing tokenizer, a bad glob, one document)
  leaves no empty run directory behind; one that existed before is left alone."""
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  try:
    yield
  except BaseException:
    if created and os.path.isdir(workdir) and not os.listdir(workdir):
      with contextlib.suppress(OSError):  # another process wrote into it meanwhile
        os.rmdir(workdir)
    raise


def _checked_run_directory(config, workdir: str):
  distributed.maybe_initialize_distributed(config.mesh)
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.parse_rules(config.mesh.rules)
  setup.check_config(config, mesh)
  # Data with nothing held out (a single document) fails here, before the run directory
  # gets a tokenizer or config.json that a corrected rerun would silently reuse.
  data.check_heldout(config.data)
  model_cfg = ModelConfig.from_dict(config.model)
  curriculum.Curriculum(config)  # a bad curriculum fails before anything is written
  time_budget.check(config)
  tok = setup.run_tokenizer(config, workdir)
  if tok.vocab_size > model_cfg.vocab_size:
    raise ConfigError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the "
                      f"tokenizer's {tok.vocab_size} tokens")
  epochs_note = setup.apply_epochs(config, tok)
  # A resumed run with a time budget keeps the number of steps its first start fixed.
  cur = curriculum.Curriculum(time_budget.planned_config(config, workdir))
  setup.write_config(config, workdir)
  return mesh, rules, model_cfg, tok, cur, epochs_note


def _prepare(config, workdir: str) -> Run:
  """Everything before the finished-run exit: the run directory, the step functions,
  the objective, the state (restored or fresh) and the progress header."""
  workdir = os.path.abspath(workdir)
  mesh, rules, model_cfg, tok, cur, epochs_note = _run_directory(config, workdir)
  t = config.train
  adapters_only = model_cfg.lora.rank > 0  # LoRA: only the adapters train
  tx = optim.make_direction(config.optim, width_mult=model_cfg.width_mult,  # 1.0 without muP
                            adapters_only=adapters_only)
  fns = build(model_cfg, tx, mesh, rules,
              microbatches=t.microbatches, z_loss=t.z_loss, seed=t.seed,
              objective=t.objective, dpo_beta=t.dpo_beta,
              token_selection=t.token_selection, token_selection_by=t.token_selection_by,
              trainable=optim.trainable(config.optim, adapters_only=adapters_only))
  objective = objectives.make(config, tok, fns)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=t.keep_last)
  abstract = jax.eval_shape(fns.init.jitted, jax.random.key(t.seed))
  opt_bytes = optim.state_bytes_per_parameter(abstract.opt_state, abstract.params)
  log.info("optimizer %s: %.2f bytes of state per parameter", config.optim.name, opt_bytes)
  state, (step, tokens, stage), data_state, restored_step = setup.restore_or_init(
      config, fns, ckpt, abstract, workdir)

  plan = cur.at(step, tokens)
  total_steps = cur.total_steps_estimate()
  progress = metrics.Progress(total_steps, step, enabled=t.progress)
  peak, peak_src = metrics.device_peak_flops(t.peak_flops)
  if epochs_note:
    progress.write(epochs_note)
  progress.write(f"phijax: {model_cfg.arch} model, {count_params(model_cfg):,} params"
                 f"{lora.summary(model_cfg, abstract.params)}, mesh {dict(mesh.shape)}, "
                 f"{total_steps} steps planned; MFU peak "
                 f"{peak / 1e9:.1f} GFLOP/s ({peak_src})")
  run = Run(config=config, workdir=workdir, model_cfg=model_cfg, mesh=mesh, tok=tok,
            cur=cur, fns=fns, objective=objective, ckpt=ckpt, state=state, step=step,
            tokens=tokens, stage=stage, plan=plan, restored_step=restored_step,
            progress=progress, opt_bytes=opt_bytes, peak_flops=peak)
  # Every process reads the global stream and puts its own shards on its devices
  # (objectives.WHOLE): a checkpoint's iterator state is the same in every layout.
  # A checkpoint taken just before a stage boundary holds the old stage's iterator;
  # the loop then opens the new stage's iterator fresh, as the uninterrupted run did.
  if not plan.done and plan.stage == stage:
    run.iterator = objective.train_iterator(plan, data_state)
  return run


def _already_finished(run: Run) -> dict:
  run.ckpt.close()
  msg = f"run in {run.workdir} already finished at step {run.step}; nothing to do"
  run.progress.write(msg)
  run.progress.close()
  return {"finished": True, "step": run.step, "message": msg}
