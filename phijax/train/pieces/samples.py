"""A finished run's ``samples.txt``: ``train.samples`` completions, one per prompt
(``train.sample_prompts``: code prompts for a code corpus, the first words of held-out
documents for any other, or the config's own), decoded with the KV-cache generator
(``phijax.model.decode``)."""

from __future__ import annotations

import os
import re

import jax
import numpy as np

from phijax import data
from phijax.model import decode
from phijax.train.pieces.base import Piece

CODE_PROMPTS = ("def ", "import ", "class ", "    return ", "# ", "for ")
OPENING_WORDS = 3


def sample_prompts(config, n: int, tok=None) -> tuple[str, ...]:
  """Up to ``n`` prompts as ``train.sample_prompts`` says: ``code``, ``heldout`` (the
  first words of ``n`` held-out documents spread over the split), ``auto`` (code when
  every training source is code: the stdlib or ``.py`` files; else heldout), or the
  config's own prompts separated by ``||``."""
  spec = config.train.sample_prompts
  if spec == "auto":
    spec = "code" if _code_corpus(config.data) else "heldout"
  if spec == "code":
    return CODE_PROMPTS[:n]
  if spec == "heldout":
    docs = [d for d in data.heldout_documents(config.data, tok) if d.strip()]
    picks = [docs[i * len(docs) // n] for i in range(min(n, len(docs)))]
    return tuple(_opening(d) for d in picks)
  return tuple(p for p in spec.split("||") if p)[:n]


def _code_corpus(cfg_data) -> bool:
  used = [s for s in cfg_data.sources.values() if s.weight > 0]
  return bool(used) and all(s.kind == "stdlib" or (s.kind == "text" and
                                                   str(s.path).endswith(".py"))
                            for s in used)


def _opening(doc: str) -> str:
  """The document's first ``OPENING_WORDS`` words, its own spacing kept, ending in a
  space (the model goes on with a new word)."""
  m = re.match(r"\s*(?:\S+\s+){0,%d}\S+" % (OPENING_WORDS - 1), doc)
  return m.group(0).lstrip() + " "


def write_samples(path, model_cfg, params, tok, prompts, max_new_tokens, *,
                  temperature=0.0, top_k=0, top_p=1.0, seed=0):
  """One sample per prompt, each stopping at end-of-text, decoded together with the
  KV-cache generator.

  Temperature 0 is greedy; above 0 the draws come from ``seed`` (prompt i uses
  ``fold_in(key(seed), i)``), so a run's samples.txt is the same every time it is
  written. The header says how the samples were drawn.
  """
  params = host_params(params)
  how = ("greedy" if temperature <= 0 else
         f"sampled: temperature {temperature:g}, top_k {top_k or 'off'}, top_p {top_p:g}, "
         f"seed {seed}")
  space_first = np.zeros(model_cfg.vocab_size, bool)
  space_first[:tok.vocab_size] = [tok.id_to_piece(i).startswith("\u2581")
                                  for i in range(tok.vocab_size)]
  prompts = list(prompts)
  # A trailing space would be a lone space token, which training text rarely has (the
  # tokenizer joins a space to the word after it): the prompt goes in without it and
  # the first new token must be one that starts with a space.
  ids = [tok.encode(p.rstrip(" ")) for p in prompts]
  first = [space_first if p.endswith(" ") and space_first.any() else None for p in prompts]
  gen = decode.Generator(model_cfg, params, mesh=decode.default_mesh(devices=1))
  outs = gen.generate(ids, max_new_tokens=max_new_tokens, seed=seed,
                      temperature=temperature, top_k=top_k, top_p=top_p,
                      eos_id=tok.eos_id, first_allowed=first, id_limit=tok.vocab_size)
  with open(path, "w") as f:
    f.write(f"# {how}; up to {max_new_tokens} new tokens per prompt, stopping at "
            "end-of-text\n\n")
    for prompt, p_ids, out in zip(prompts, ids, outs):
      f.write(f"=== prompt: {prompt!r}\n{tok.decode(p_ids + out.ids)}\n\n")


def host_params(params):
  """Parameters as host numpy arrays; sharded across processes, all must call this."""
  leaves = jax.tree_util.tree_leaves(params)
  if all(getattr(x, "is_fully_addressable", True) or getattr(x, "is_fully_replicated", False)
         for x in leaves):
    return jax.device_get(params)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(params, tiled=True)


class Samples(Piece):
  """``samples.txt`` for a finished run with ``train.samples`` > 0, written by
  process 0 from the final parameters (seeded by ``train.seed``)."""

  def after_end(self, run):
    t = run.train
    if run.outcome != "finished" or not t.samples:
      return
    params = run.state.params
    if jax.process_count() > 1:
      params = host_params(params)  # a collective: all call it
    if jax.process_index() == 0:
      with run.progress.phase() as phase:
        prompts = sample_prompts(run.config, t.samples, run.tok)
        write_samples(os.path.join(run.workdir, "samples.txt"), run.model_cfg, params,
                      run.tok, prompts, t.sample_tokens, temperature=t.sample_temperature,
                      top_k=t.sample_top_k, top_p=t.sample_top_p, seed=t.seed)
        phase.done("samples -> samples.txt")
