"""What a run does before its first step: the config's checks, the run directory
(``tokenizer.model``, ``config.json``), epochs turned into steps, the compilation
cache, and the training state, restored from the newest checkpoint or made fresh
(optionally warm-started). The loop (``phijax.train.loop``) calls these in order.
"""

from __future__ import annotations

import json
import logging
import math
import os

import jax

from phijax import data, files
from phijax.config_files import ConfigError
from phijax.convert import weights
from phijax.model import lora, quant, sharding
from phijax.model.config import ModelConfig
from phijax.train import checkpoint, objectives, optim, wandb_log

log = logging.getLogger("phijax")


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
  if (config.model.get("lora") or {}).get("rank", 0):
    optim.check_lora(config.optim)  # before the run directory is written to
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


def write_config(config, workdir):
  """config.json: the resolved config. A resumed run must have the same model."""
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path) and os.path.isdir(os.path.join(workdir, "checkpoints")):
    old = files.read_json_object(path, "a phijax run config")
    keep_row_order(config, old)
    keep_problem_split(config, old)
    # Compared as ModelConfigs: fields added since the run started take their
    # defaults, so an older run still resumes.
    old_model = _model_fields(old.get("model", {}))
    resolved = json.loads(config.to_json_best_effort())
    new_model = _model_fields(resolved["model"])
    if old_model != new_model:
      diff = sorted(k for k in set(old_model) | set(new_model)
                    if old_model.get(k) != new_model.get(k))
      raise ConfigError(
          f"{workdir} holds a run with a different model config (fields {diff}); "
          "use a new --workdir, or the same config to resume")
  resolved = json.loads(config.to_json_best_effort())
  if jax.process_index() == 0:  # every process checks; one writes (atomically: the
    with open(f"{path}.tmp", "w") as f:  # others may be reading the old one)
      json.dump(resolved, f, indent=2)
    os.replace(f"{path}.tmp", path)


def keep_row_order(config, old: dict) -> None:
  """A run started before ``data.shuffle`` existed streamed documents in order; its
  saved data iterator state belongs to that pipeline, so it resumes with it."""
  if "shuffle" not in old.get("data", {"shuffle": None}) and config.data.shuffle == "global":
    log.info("resuming a run started before data.shuffle existed: keeping its row order "
             "(data.shuffle=documents)")
    config.data.shuffle = "documents"


def keep_problem_split(config, old: dict) -> None:
  """An arithmetic source of a run started before ``heldout_share`` existed trained on
  every problem: it resumes on the same problems (share 0), not on today's default."""
  old_sources = old.get("data", {}).get("sources", {})
  for name, scfg in config.data.sources.items():
    was = old_sources.get(name)
    if (scfg.get("kind") == "arithmetic" and isinstance(was, dict)
        and was.get("kind") == "arithmetic" and "heldout_share" not in was
        and scfg.get("heldout_share", 0.0)):
      log.info("resuming a run started before arithmetic heldout_share existed: source "
               "%r keeps training on every problem (heldout_share=0)", name)
      scfg.heldout_share = 0.0


def _model_fields(model: dict) -> dict:
  try:
    return ModelConfig.from_dict(model).to_dict()
  except (TypeError, ValueError):  # not a model config phijax can read: compare as is
    return dict(model)


def run_tokenizer(config, workdir):
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


def enable_compilation_cache(path: str) -> None:
  """JAX's persistent compilation cache: a rerun (or resume) skips recompiling."""
  if path:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def restore_or_init(config, fns, ckpt, abstract, workdir: str | None = None):
  """The state to train from: ``(state, (step, tokens, stage), data_state,
  restored_step)``. The newest readable checkpoint if there is one (``restored_step``
  is its step), else a fresh state from ``train.seed`` (``restored_step`` -1), with
  the parameters of ``train.init_from`` when that is set (QLoRA: quantized here, the
  error written to ``workdir``/quantization.json)."""
  t = config.train
  restored = ckpt.restore_latest(checkpoint.abstract_like(abstract, fns.state_shardings))
  if restored is None:
    state = fns.init(jax.random.key(t.seed))
    if t.init_from:  # warm start: parameters only, fresh optimizer state
      params = _warm_start_params(t.init_from, abstract.params, workdir)
      params = jax.device_put(params, fns.state_shardings.params)
      # LoRA: the source's model (a LoRA source's adapters merged) is the frozen base;
      # the adapters start fresh (A random, B zero), so step 0 computes the source.
      params = lora.with_adapters_from(params, state.params)
      state = state.replace(params=params, opt_state=jax.jit(
          fns.tx.init, out_shardings=fns.state_shardings.opt_state)(params))
      log.info("warm start: parameters from %s", t.init_from)
    return state, (0, 0, 0), None, -1
  step, state, meta = restored
  position = (int(meta["step"]), int(meta["tokens"]), int(meta["stage"]))
  data_state = checkpoint.decode_iterator_state(meta.get("data_state"))
  log.info("resumed from step %d (%d tokens) in %s", position[0], position[1],
           ckpt.directory)
  return state, position, data_state, step


def _warm_start_params(path: str, abstract_params, workdir: str | None):
  """``train.init_from``'s parameters in the run's tree. A LoRA run records the base it
  trains over (absolute path and SHA-256, ``lora_base.json``: what ``phijax.convert
  --adapters_only`` names). A quantized base (QLoRA's ``model.lora.quantize``) is read
  as float32 and quantized (on the host CPU, so re-quantizing anywhere gives the same
  codes), and how far it is from the source is logged and kept in
  ``quantization.json``."""
  raw = weights.read_params(path, merged=True)[1]
  write = workdir and jax.process_index() == 0
  if write and lora.count(abstract_params):
    with open(os.path.join(workdir, weights.LORA_BASE), "w") as f:
      json.dump({"base": os.path.abspath(os.path.expanduser(path)),
                 "base_sha256": weights.base_hash(raw)}, f, indent=2)
  if not quant.quantized_nodes(abstract_params):
    return weights.fit_params(raw, abstract_params, path)
  dense = weights.fit_params(raw, quant.float_like(abstract_params), path)
  with jax.default_device(jax.devices("cpu")[0]):
    params = jax.device_get(quant.quantize_like(dense, abstract_params))
  report = quant.report(dense, params)
  log.info("quantized base: %d matrices, %s parameters at %.3f bytes each, relative RMS "
           "error %.4f", report["matrices"], f"{report['parameters']:,}",
           report["bytes_per_parameter"], report["relative_rms_error"])
  if write:
    with open(os.path.join(workdir, "quantization.json"), "w") as f:
      json.dump(report, f, indent=2)
  return params
