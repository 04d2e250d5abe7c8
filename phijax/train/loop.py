"""Training loop and CLI.

    python -m phijax.train --config=configs/tiny.py --workdir=runs/tiny [--config.a.b=v]

Re-running the same command on the same work directory resumes from the newest
valid checkpoint; a finished run says so and exits 0. The work directory gets
``config.json``, ``metrics.jsonl``, TensorBoard events (``tb/``), ``checkpoints/``
and ``samples.txt``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np

from phijax import data
from phijax.train import checkpoint
from phijax.convert import weights
from phijax.train import curriculum
from phijax.model import decode
from phijax.train import metrics, objectives, optim, probes
from phijax.model import sharding
from phijax.train import distributed, wandb_log
from phijax.config_files import ConfigError  # noqa: F401  (re-exported: train.ConfigError)
from phijax.model.config import ModelConfig
from phijax.train.step import build, device_batch

log = logging.getLogger("phijax")

SAMPLE_PROMPTS = ("def ", "import ", "class ", "    return ", "# ", "for ")




class NonFiniteError(RuntimeError):
  """``train.max_nonfinite`` steps in a row had a non-finite loss or gradient."""


def check_config(config, mesh) -> None:
  t = config.train
  if t.batch_size <= 0:
    raise ConfigError(f"train.batch_size must be positive, got {t.batch_size}")
  if t.microbatches <= 0 or t.batch_size % t.microbatches:
    raise ConfigError(f"train.microbatches={t.microbatches} must divide "
                      f"train.batch_size={t.batch_size}")
  if t.batch_size % jax.process_count():
    raise ConfigError(f"train.batch_size={t.batch_size} does not divide over "
                      f"{jax.process_count()} processes; pick a multiple of "
                      f"{jax.process_count()}")
  ways = sharding.batch_divisor(mesh, sharding.parse_rules(config.mesh.rules))
  if (t.batch_size // t.microbatches) % ways:
    raise ConfigError(
        f"train.batch_size={t.batch_size} (per micro-batch {t.batch_size // t.microbatches}) "
        f"is not divisible by the {ways} ways the batch is split (mesh data*fsdp = "
        f"{mesh.shape['data']}*{mesh.shape['fsdp']}); pick a multiple of {ways}")
  if config.data.seq_len > config.model.max_position_embeddings:
    raise ConfigError(f"data.seq_len={config.data.seq_len} exceeds "
                      f"model.max_position_embeddings={config.model.max_position_embeddings}")
  objectives.check(config)
  wandb_log.check(config.train.wandb)  # asked for but not installed: fail before building


def apply_epochs(config, tok) -> str | None:
  """``train.epochs`` > 0: turns epochs into ``train.steps`` (one epoch = the packed
  rows of one pass over the train split, in batches) and evaluates once per epoch.
  Returns a line saying so, None when epochs are off. Deterministic, so a resumed run
  derives the same numbers."""
  t = config.train
  if t.epochs <= 0:
    return None
  rows = data.epoch_rows(config.data, tok)
  per_epoch = max(1, math.ceil(rows / t.batch_size))
  t.steps, t.tokens, t.eval_every = t.epochs * per_epoch, 0, per_epoch
  return (f"{t.epochs} epochs of {rows:,} rows ({per_epoch} steps of {t.batch_size}): "
          f"{t.steps} steps, evaluated every epoch")


def _write_config(config, workdir):
  """config.json: the resolved config. A resumed run must have the same model."""
  path = os.path.join(workdir, "config.json")
  resolved = json.loads(config.to_json_best_effort())
  if os.path.exists(path) and os.path.isdir(os.path.join(workdir, "checkpoints")):
    with open(path) as f:
      old = json.load(f)
    # Compared as ModelConfigs: fields added since the run started take their
    # defaults, so an older run still resumes.
    old_model = _model_fields(old.get("model", {}))
    new_model = _model_fields(resolved["model"])
    if old_model != new_model:
      diff = sorted(k for k in set(old_model) | set(new_model)
                    if old_model.get(k) != new_model.get(k))
      raise ConfigError(
          f"{workdir} holds a run with a different model config (fields {diff}); "
          "use a new --workdir, or the same config to resume")
  if jax.process_index() == 0:  # every process checks; one writes (atomically: the
    with open(f"{path}.tmp", "w") as f:  # others may be reading the old one)
      json.dump(resolved, f, indent=2)
    os.replace(f"{path}.tmp", path)


def _model_fields(model: dict) -> dict:
  try:
    return ModelConfig.from_dict(model).to_dict()
  except (TypeError, ValueError):  # not a model config phijax can read: compare as is
    return dict(model)


class _StopFlag:
  """SIGTERM / SIGINT set a flag; the loop checkpoints at the next step boundary.

  With several processes every one must stop at the same step. SIGTERM (a
  preemption notice, often sent to one host only) is then left to JAX's own
  notifier, which ``multihost_utils.reached_preemption_sync_point`` reads: a Python
  handler here would replace it. SIGINT sets a local flag that the processes agree
  on with an all-gather each step.
  """

  def __init__(self):
    self.signal = None
    self._old = {}
    self.multihost = jax.process_count() > 1

  def __enter__(self):
    sigs = (signal.SIGINT,) if self.multihost else (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    if self.signal is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C stops at once
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)

  def requested(self, step: int) -> bool:
    flag = self.signal is not None
    if self.multihost:  # every host must stop at the same step: both calls on all
      from jax.experimental import multihost_utils
      preempted = multihost_utils.reached_preemption_sync_point(step)
      flag = bool(multihost_utils.process_allgather(np.int32(flag)).max())
      if preempted and self.signal is None:
        self.signal = "SIGTERM (preemption notice)"
      elif flag and self.signal is None:
        self.signal = "SIGINT (on another process)"
      flag = flag or preempted
    return flag


def write_samples(path, model_cfg, params, tok, n, max_new_tokens, *, temperature=0.0,
                  top_k=0, top_p=1.0, seed=0):
  """``n`` samples, one per prompt of ``SAMPLE_PROMPTS``, each stopping at end-of-text,
  decoded together with the KV-cache generator.

  Temperature 0 is greedy; above 0 the draws come from ``seed`` (prompt i uses
  ``fold_in(key(seed), i)``), so a run's samples.txt is the same every time it is
  written. The header says how the samples were drawn.
  """
  params = _host_params(params)
  how = ("greedy" if temperature <= 0 else
         f"sampled: temperature {temperature:g}, top_k {top_k or 'off'}, top_p {top_p:g}, "
         f"seed {seed}")
  space_first = np.zeros(model_cfg.vocab_size, bool)
  space_first[:tok.vocab_size] = [tok.id_to_piece(i).startswith("\u2581")
                                  for i in range(tok.vocab_size)]
  prompts = SAMPLE_PROMPTS[:n]
  # A trailing space would be a lone space token, which training text rarely has (the
  # tokenizer joins a space to the word after it): the prompt goes in without it and
  # the first new token must be one that starts with a space.
  ids = [tok.encode(p.rstrip(" ")) for p in prompts]
  first = [space_first if p.endswith(" ") and space_first.any() else None for p in prompts]
  gen = decode.Generator(model_cfg, params, mesh=decode.default_mesh(devices=1))
  outs = gen.generate(ids, max_new_tokens=max_new_tokens, seed=seed,
                      temperature=temperature, top_k=top_k, top_p=top_p,
                      eos_id=tok.eos_id, first_allowed=first)
  with open(path, "w") as f:
    f.write(f"# {how}; up to {max_new_tokens} new tokens per prompt, stopping at "
            "end-of-text\n\n")
    for prompt, p_ids, out in zip(prompts, ids, outs):
      f.write(f"=== prompt: {prompt!r}\n{tok.decode(p_ids + out.ids)}\n\n")


def _host_params(params):
  """Parameters as host numpy arrays; sharded across processes, all must call this."""
  leaves = jax.tree_util.tree_leaves(params)
  if all(getattr(x, "is_fully_addressable", True) or getattr(x, "is_fully_replicated", False)
         for x in leaves):
    return jax.device_get(params)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(params, tiled=True)


def _run_tokenizer(config, workdir):
  """The run keeps its own copy of the tokenizer, so a resume (on any machine or
  Python version, whose stdlib would train a different one) reads the same ids.

  With several processes, process 0 trains (or loads) it and saves the run's copy;
  the others wait at a barrier and load that copy: one tokenizer, no race on the
  tokenizer cache.
  """
  path = os.path.join(workdir, "tokenizer.model")
  warm = os.path.join(os.path.expanduser(config.train.init_from), "tokenizer.model")
  if config.train.init_from and not config.data.tokenizer.path and os.path.isfile(warm):
    # A warm start reads text with the tokenizer its parameters were trained with
    # (a run and python -m phijax.convert keep it), never one trained on the new data.
    config.data.tokenizer.path = warm
    log.info("tokenizer: %s (the warm start's)", warm)
  tok = None
  if jax.process_index() == 0 and not os.path.exists(path):
    tok = data.load_tokenizer(config.data)
    tmp = f"{path}.tmp"
    tok.save(tmp)
    os.replace(tmp, path)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("phijax: tokenizer saved")
    if not os.path.exists(path):
      raise ConfigError(
          f"process {jax.process_index()} cannot see {path}, which process 0 wrote: "
          "--workdir must be on a file system every process shares")
  if tok is not None:
    return tok
  if os.path.exists(path):
    with config.unlocked():
      config.data.tokenizer.path = path
    return data.load_tokenizer(config.data)
  return data.load_tokenizer(config.data)  # pragma: no cover - workdir not writable


@dataclasses.dataclass
class _Position:
  step: int
  tokens: int
  stage: int


def enable_compilation_cache(path: str) -> None:
  """JAX's persistent compilation cache: a rerun (or resume) skips recompiling."""
  if path:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def train(config, workdir: str) -> dict:
  """Runs (or resumes) training; returns the final summary dict."""
  workdir = os.path.abspath(workdir)
  enable_compilation_cache(config.train.compile_cache_dir)
  os.makedirs(workdir, exist_ok=True)
  distributed.maybe_initialize_distributed(config.mesh)
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.parse_rules(config.mesh.rules)
  check_config(config, mesh)
  # Data with nothing held out (a single document) fails here, before the run directory
  # gets a tokenizer or config.json that a corrected rerun would silently reuse.
  data.check_heldout(config.data)
  model_cfg = ModelConfig.from_dict(config.model)
  curriculum.Curriculum(config)  # a bad curriculum fails before anything is written
  tok = _run_tokenizer(config, workdir)
  if tok.vocab_size > model_cfg.vocab_size:
    raise ConfigError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the "
                      f"tokenizer's {tok.vocab_size} tokens")
  epochs_note = apply_epochs(config, tok)
  cur = curriculum.Curriculum(config)
  _write_config(config, workdir)

  t = config.train
  tx = optim.make_direction(config.optim, width_mult=model_cfg.width_mult)  # 1.0 without muP
  fns = build(model_cfg, tx, mesh, rules,
              microbatches=t.microbatches, z_loss=t.z_loss, seed=t.seed,
              objective=t.objective, dpo_beta=t.dpo_beta,
              token_selection=t.token_selection, trainable=optim.trainable(config.optim))
  objective = objectives.make(config, tok, fns)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=t.keep_last)
  best = (checkpoint.Checkpointer(os.path.join(workdir, "best"), keep=t.keep_best,
                                  best_metric=t.best_metric) if t.keep_best else None)
  abstract = jax.eval_shape(fns.init.jitted, jax.random.key(t.seed))
  opt_bytes = optim.state_bytes_per_parameter(abstract.opt_state, abstract.params)
  log.info("optimizer %s: %.2f bytes of state per parameter", config.optim.name, opt_bytes)
  restored = ckpt.restore_latest(checkpoint.abstract_like(abstract, fns.state_shardings))
  if restored is None:
    state = fns.init(jax.random.key(t.seed))
    if t.init_from:  # warm start: parameters only, fresh optimizer state
      params = weights.load_init_params(t.init_from, abstract.params)
      params = jax.device_put(params, fns.state_shardings.params)
      state = state.replace(params=params, opt_state=jax.jit(
          fns.tx.init, out_shardings=fns.state_shardings.opt_state)(params))
      log.info("warm start: parameters from %s", t.init_from)
    pos = _Position(0, 0, 0)
    data_state = None
  else:
    step, state, meta = restored
    pos = _Position(int(meta["step"]), int(meta["tokens"]), int(meta["stage"]))
    data_state = checkpoint.decode_iterator_state(meta.get("data_state"))
    log.info("resumed from step %d (%d tokens) in %s", pos.step, pos.tokens, ckpt.directory)

  plan = cur.at(pos.step, pos.tokens)
  total_steps = cur.total_steps_estimate()
  progress = metrics.Progress(total_steps, pos.step, enabled=t.progress)
  peak, peak_src = metrics.device_peak_flops(t.peak_flops)
  if epochs_note:
    progress.write(epochs_note)
  progress.write(f"phijax: {model_cfg.arch} model, {_count(model_cfg):,} params, mesh "
                 f"{dict(mesh.shape)}, {total_steps} steps planned; MFU peak "
                 f"{peak / 1e9:.1f} GFLOP/s ({peak_src})")

  # Every process reads the global stream and puts its own shards on its devices
  # (objectives.WHOLE): a checkpoint's iterator state is the same in every layout.
  make_iterator = objective.train_iterator

  # A checkpoint taken just before a stage boundary holds the old stage's iterator;
  # the loop then opens the new stage's iterator fresh, as the uninterrupted run did.
  it = make_iterator(plan, data_state) if not plan.done and plan.stage == pos.stage else None
  eval_batches = None

  def get_eval_batches():
    nonlocal eval_batches
    if eval_batches is None:
      eval_batches = objective.eval_batches(t.eval_batches or None)
    return eval_batches

  def meta():
    return {"step": pos.step, "tokens": pos.tokens, "stage": pos.stage,
            "data_state": checkpoint.encode_iterator_state(it.get_state()) if it else None,
            "model": model_cfg.to_dict()}

  saved_step = restored[0] if restored else -1

  def save(force=False):
    nonlocal saved_step
    if pos.step != saved_step:
      ckpt.save(pos.step, state, meta(), force=force)
      saved_step = pos.step

  if plan.done:
    ckpt.close()
    msg = f"run in {workdir} already finished at step {pos.step}; nothing to do"
    progress.write(msg)
    progress.close()
    return {"finished": True, "step": pos.step, "message": msg}

  # After the finished-run exit, so a rerun of a finished run opens no W&B run; before
  # compilation, so a W&B login problem shows at once.
  writer = metrics.Writer(workdir, sinks=wandb_log.sinks(config, workdir))

  # One step variant per sequence-length bucket, compiled ahead of time so a length
  # change mid-run never stalls on a compile (and the count is known up front).
  compile_start = time.perf_counter()
  step_variants = {}
  if t.aot_compile:
    for length in cur.buckets():
      rows = t.batch_size * (cur.eval_seq_len // length if cur.seq_mode == "reshape" else 1)
      step_variants[(rows, length)] = fns.compile_train_step(rows, length)
    progress.write(f"compiled {len(step_variants)} train-step variant(s) for lengths "
                   f"{cur.buckets()} in {time.perf_counter() - compile_start:.1f}s")

  def train_step(state, batch, lr):
    shape = batch["inputs"].shape
    fn = step_variants.get(shape)
    if fn is None:  # not planned (aot_compile off, or an unplanned shape): jit compiles
      log.info("compiling a train step for batch shape %s", shape)
      fn = step_variants[shape] = fns.compile_train_step(*shape)
    return fn(state, batch, lr, *objective.step_args)

  def evaluate_and_log(keep_best=True):
    with progress.phase() as phase:
      ev = objective.evaluate(state.params, get_eval_batches())
      phase.done(f"step {pos.step}: eval loss {ev['eval_loss']:.4f}, "
                 f"{objective.describe(ev)}")
    writer.write(pos.step, {"tokens": pos.tokens, **ev})
    if best is not None and keep_best:
      best.save(pos.step, state, meta(), force=True, metrics=ev)

  # The starting model's evaluation (step 0) measures what the run was given, not
  # what it trained: it starts the eval curve but is no best checkpoint. A run that
  # restarts before its first checkpoint is at step 0 again and logs it again.
  at_start = t.eval_at_start if t.eval_at_start is not None else bool(t.init_from)
  if at_start and pos.step == 0:
    evaluate_and_log(keep_best=False)

  probe_list = probes.make(config, fns)  # measurements logged beside the step's
  window_start, window_tokens = time.perf_counter(), 0
  progress.start(pos.step)
  last_save_time = time.time()
  stop_reason = None
  prev_streak = None
  with _StopFlag() as stop:
    while not plan.done:
      if it is None or plan.stage != pos.stage:  # a curriculum stage switch: new mixture
        if it is not None and hasattr(it, "close"):
          it.close()  # stops grain worker processes, if any
        pos.stage = plan.stage
        it = make_iterator(plan)
      batch = curriculum.shorten_batch(next(it), plan.seq_len, cur.seq_mode)
      rows, cols = batch["inputs"].shape
      dev_batch = device_batch(batch, fns.batch_sharding, objective.batch_keys)
      state, m = train_step(state, dev_batch, jnp.float32(plan.lr))
      pos.step += 1
      for probe in probe_list:
        if probe.due(pos.step):
          probe_start = time.perf_counter()
          writer.write(pos.step, {"tokens": pos.tokens, **probe.measure(state, dev_batch,
                                                                          plan.lr)})
          window_start += time.perf_counter() - probe_start  # not in tokens/s
      step_tokens = rows * cols  # the global batch
      pos.tokens += step_tokens
      window_tokens += step_tokens
      # The previous step's streak: reading it does not wait for the step just queued.
      if prev_streak is not None and int(prev_streak) >= t.max_nonfinite:
        stop_reason = "nonfinite"
      prev_streak = m["nonfinite_streak"]
      if pos.step % t.log_every == 0 or stop_reason:
        m = jax.device_get(m)
        elapsed = time.perf_counter() - window_start
        tps = window_tokens / max(elapsed, 1e-9)
        row = {"tokens": pos.tokens, "loss": float(m["loss"]), **plan.scalars(),
               "seq_len": cols, "grad_norm": float(m["grad_norm"]), "tokens_per_sec": tps,
               "mfu": (tps * metrics.flops_per_token(model_cfg, cols) / peak) if peak else 0.0,
               "skipped_steps": int(jax.device_get(state.skipped)),
               **{k: float(m[k]) for k in objective.log_keys}}
        writer.write(pos.step, row)
        progress.update(pos.step, {"loss": row["loss"], "lr": plan.lr, "len": cols,
                                   "tok/s": int(tps), "mfu": row["mfu"] if peak else None})
        window_start, window_tokens = time.perf_counter(), 0
      if stop_reason:
        break
      plan = cur.at(pos.step, pos.tokens)
      if t.eval_every and pos.step % t.eval_every == 0 and not plan.done:
        evaluate_and_log()
        window_start = time.perf_counter()
      minutes = t.save_every_minutes and time.time() - last_save_time > 60 * t.save_every_minutes
      if (t.save_every and pos.step % t.save_every == 0) or minutes:
        save()
        last_save_time = time.time()
      if stop.requested(pos.step):
        stop_reason = stop.signal or "signal"
        break

  if best is not None:
    best.close()
  if stop_reason == "nonfinite":
    ckpt.close()
    progress.close()
    writer.close()
    good = ckpt.all_steps()
    raise NonFiniteError(
        f"stopping: {t.max_nonfinite} steps in a row had a non-finite loss or "
        f"gradient (last at step {pos.step}); last good checkpoint: "
        f"{'step %d in %s' % (good[-1], ckpt.directory) if good else 'none'}; lower the "
        "learning rate or check the data, then rerun to resume from it")
  save(force=True)
  ckpt.close()
  if stop_reason:
    msg = (f"{stop_reason}: checkpoint written at step {pos.step} in {ckpt.directory}; "
           "rerun the same command to resume")
    progress.write(msg)
    if jax.process_index() > 0:  # progress writes on process 0 only
      log.info("process %d: %s", jax.process_index(), msg)
    progress.close()
    writer.close()
    return {"finished": False, "step": pos.step, "message": msg}

  progress.close()  # from here on, one line per phase with the time it took
  with progress.phase() as phase:
    if (t.final_eval_batches or None) == (t.eval_batches or None):
      final_batches = get_eval_batches()  # the periodic evals' rows: built once
    else:
      final_batches = objective.eval_batches(t.final_eval_batches or None)
    progress.write(f"final eval over the whole held-out split ({len(final_batches)} "
                   "batches)..." if not t.final_eval_batches else
                   f"final eval over {len(final_batches)} held-out batches...")
    ev = objective.evaluate(state.params, final_batches)
    phase.done(f"final eval: {objective.describe(ev)}")
  with progress.phase() as phase:
    baseline, line = objective.baseline()
    phase.done(line)
  # "final": over the whole held-out split (periodic evals use eval_batches of it).
  writer.write(pos.step, {"tokens": pos.tokens, **ev, **baseline, "final": True,
                          "opt_state_bytes_per_param": opt_bytes})
  writer.close()
  if t.samples and jax.process_count() > 1:
    state = state.replace(params=_host_params(state.params))  # a collective: all call it
  if jax.process_index() == 0 and t.samples:
    with progress.phase() as phase:
      write_samples(os.path.join(workdir, "samples.txt"), model_cfg, state.params, tok,
                    t.samples, t.sample_tokens, temperature=t.sample_temperature,
                    top_k=t.sample_top_k, top_p=t.sample_top_p, seed=t.seed)
      phase.done("samples -> samples.txt")
  summary = {"finished": True, "step": pos.step, "tokens": pos.tokens, **ev, **baseline}
  if jax.process_index() == 0:
    with progress.phase() as phase:
      metrics.plot_run(workdir)
      phase.done("plot -> loss.png")
  print(f"done: step {pos.step}, {pos.tokens:,} tokens; {objective.summary(ev, baseline)}",
        flush=True)
  return summary


def _count(model_cfg):
  from phijax.model import count_params
  return count_params(model_cfg)


def _parser():
  from phijax import cli
  parser = cli.ArgumentParser(prog=cli.prog("phijax.train", "phijax-train"),
                              description=__doc__)
  cli.add_config(parser)
  parser.add_argument("--workdir", required=True, type=cli.new_dir,
                      help="run directory; rerunning on it resumes (a finished run exits 0)")
  return parser


def run(argv=None):
  """Console entry point (``phijax-train``)."""
  from phijax import cli

  parser = _parser()

  def main(args):
    try:
      train(args.config, args.workdir)
    except NonFiniteError as e:  # not bad input: the run itself failed
      cli.fail(parser.prog, str(e), code=1)

  try:
    cli.main(parser, main, argv)
  except SystemExit as e:  # with several processes, failing alone must not hang the rest
    distributed.exit_after_error(e.code if isinstance(e.code, int) else 1)
    raise


if __name__ == "__main__":
  run()
