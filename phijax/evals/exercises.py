"""The ``exercises`` evaluation: held-out code exercises of the stdlib
(``phijax.data.exercises``), scored by response loss and exact match.

    python -m phijax.evaluate --workdir=runs/tiny --task=exercises

The exercises are the held-out ones of the split the model was pretrained with (its
run config's ``data.heldout_fraction`` and stdlib path; else ``--config``'s; else the
defaults), so none comes from a file it was trained on. ``--limit`` takes the first
N in file order (default ``DEFAULT_LIMIT``, which covers all 124 of the default
split).

Presentation (``--exercises_format``):
- ``text`` (default): the prompt as plain text and the body as its continuation,
  exactly as the code sat in the pretraining files, which is how a base model trained
  on the stdlib has seen functions. Generation stops at end-of-text or at the first
  line that starts without indentation (the function is over: the next ``def``,
  ``class``, decorator or statement at column 0).
- ``chat``: rendered as the ``sft`` data kind renders an exercise record
  (``prompt <eot> body <eot>``, ``phijax.data.sft.render``), for a model fine-tuned on
  ``python -m phijax.data.exercises --out=...``; generation stops at end-of-turn too.

Scores:
- ``response_loss``: mean negative log-likelihood per body token given the prompt
  (nats), prompt tokens excluded; ``response_bpb`` the same summed in bits over the
  body's UTF-8 bytes. In ``text`` format prompt and body are tokenized together (the
  body tokens are what follows the longest common prefix with the prompt's own
  tokens; where the tokenizer merges a token across the boundary, 3 of the 124
  held-out exercises with the stdlib BPE, that token counts as body). Generation
  starts from the prompt tokenized alone, as a user's prompt would be. In ``chat``
  format the tokens are ``sft.render``'s, the closing end-of-turn included.
- ``exact_match``: greedy decoding of the body, compared with the reference after
  ``normalize``: line endings to ``\\n``, leading tabs expanded to 8 columns (Python's
  rule), trailing whitespace stripped, blank lines dropped. Indentation is otherwise
  compared as written: it is syntax, and the prompt's docstring shows its width.
  Each body gets ``min(--max_new_tokens, 1.25 x reference tokens + 16)`` new tokens:
  exact match needs no more, and a model that never ends a body costs no more.
- ``ended``: the share of greedy bodies the model ended itself (end-of-text, or
  end-of-turn in ``chat`` format, or a line at column 0) before that budget: whether
  it learned where a body stops, which exact match cannot show while it is 0.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import string
import time

import numpy as np

DEFAULT_LIMIT = 200
FORMATS = ("text", "chat")
# A line that starts with anything but whitespace ends the body (the prompt is at
# column 0, so the body is indented). Stop strings are substrings, so one per first
# character; ``body_of`` also cuts at a non-ASCII one.
BODY_STOPS = tuple("\n" + c for c in string.printable if not c.isspace())


def add_args(group) -> None:
  """The task's own flags (``--limit``, ``--max_new_tokens``, ``--batch_size`` and
  ``--config`` are the evaluate command's)."""
  group.add_argument("--exercises_format", choices=FORMATS, default="text",
                     help="text (default): the prompt as plain code, the body as its "
                          "continuation; chat: prompt <eot> body <eot>, as the sft data "
                          "kind renders python -m phijax.data.exercises records")


def normalize(body: str) -> str:
  """The body as exact match compares it (see the module docstring)."""
  out = []
  for line in body.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
    stripped = line.lstrip(" \t")
    line = line[:len(line) - len(stripped)].expandtabs(8) + stripped
    if line.strip():
      out.append(line.rstrip())
  return "\n".join(out)


def body_of(text: str) -> str:
  """The generated text up to the first non-blank line that starts without
  indentation (that line and everything after it is not the function's body)."""
  lines = text.split("\n")
  for i, line in enumerate(lines):
    if line.strip() and not line[0].isspace():
      return "\n".join(lines[:i])
  return text


def is_exact(reference: str, generated: str) -> bool:
  return normalize(reference) == normalize(body_of(generated))


@dataclasses.dataclass
class _Encoded:
  context: list  # the ids generation starts from
  ids: list  # the prompt and the reference body (+ eot in chat format), for the loss
  target_mask: np.ndarray  # [len(ids) - 1] bool: targets that are body tokens


def _common_prefix(a, b) -> int:
  n = 0
  for x, y in zip(a, b):
    if x != y:
      break
    n += 1
  return n


def encode(ex, tok, fmt: str) -> _Encoded:
  """Token ids of one exercise and which targets are body tokens."""
  if fmt == "chat":
    from phijax.data import sft
    ids, is_response, _ = sft.render([("user", ex.prompt), ("assistant", ex.response)],
                                     tok, max_tokens=1 << 30)
    ids = ids.tolist()
    context = ids[:int(np.argmax(is_response))]
    return _Encoded(context, ids, np.asarray(is_response[1:], bool))
  prompt = list(tok.encode(ex.prompt))
  ids = list(tok.encode(ex.prompt + ex.response))
  n = max(_common_prefix(prompt, ids), 1)
  mask = np.zeros(max(len(ids) - 1, 0), bool)
  mask[n - 1:] = True
  return _Encoded(prompt, ids, mask)


def _split_settings(m, args) -> dict:
  """Where the pretraining split comes from: the model's run config, ``--config``,
  or the data defaults."""
  from phijax.data import exercises as data_ex
  for where, cfg in (("the run's config", m.run_config),
                     ("--config", getattr(args, "config", None))):
    if cfg is None or "data" not in cfg:
      continue
    d = cfg["data"]
    stdlib = [s for s in d.get("sources", {}).values() if s.get("kind") == "stdlib"]
    return {"heldout_fraction": float(d["heldout_fraction"]),
            "stdlib_path": stdlib[0].get("path", "") if stdlib else "",
            "split_from": where + ("" if stdlib else " (it has no stdlib source)")}
  return {"heldout_fraction": data_ex.default_heldout_fraction(), "stdlib_path": "",
          "split_from": "the data defaults"}


@functools.lru_cache(maxsize=8)
def _nll_fn(cfg):
  """jitted ``(params, inputs, targets, mask) -> [B]`` summed body NLL per row."""
  import jax
  import jax.numpy as jnp

  from phijax import model as model_lib
  model = model_lib.Transformer(cfg)

  @jax.jit
  def nll(params, inputs, targets, mask):
    logits = model.apply({"params": params}, inputs).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return -(picked * mask).sum(axis=-1)

  return nll


def response_nll(gen, encoded, batch_size: int) -> np.ndarray:
  """Summed body NLL (nats) of each encoded exercise, through ``gen``'s parameters and
  mesh. Rows are right-padded to a power-of-two length (one compile per bucket); a
  causal model's logits at real positions do not see the padding, which the mask
  leaves out."""
  from flax import linen as nn

  from phijax.model import decode, sharding
  fn = _nll_fn(gen.cfg)
  cap = gen.cfg.max_position_embeddings
  rows = -(-batch_size // gen.batch_divisor) * gen.batch_divisor
  order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
  out = np.zeros(len(encoded), np.float64)
  for start in range(0, len(order), rows):
    chunk = order[start:start + rows]
    T = decode.bucket(max(len(encoded[i].ids) - 1 for i in chunk), cap)
    inputs = np.zeros((rows, T), np.int32)
    targets = np.zeros((rows, T), np.int32)
    mask = np.zeros((rows, T), np.float32)
    for r, i in enumerate(chunk):
      e = encoded[i]
      n = len(e.ids) - 1
      inputs[r, :n] = e.ids[:-1]
      targets[r, :n] = e.ids[1:]
      mask[r, :n] = e.target_mask
    with sharding.mesh_context(gen.mesh), nn.logical_axis_rules(gen.rules):
      sums = np.asarray(fn(gen.params, inputs, targets, mask), np.float64)
    out[chunk] = sums[:len(chunk)]
  return out


def _generate(gen, tok, encoded, budgets, fmt: str, batch_size: int):
  """Greedy bodies, in batches of similar budget; ``Output`` per exercise."""
  eos = tok.eot_id if fmt == "chat" else tok.eos_id
  order = sorted(range(len(encoded)), key=lambda i: (budgets[i], len(encoded[i].context)))
  outs = [None] * len(encoded)
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    results = gen.generate([encoded[i].context for i in chunk],
                           max_new_tokens=max(budgets[i] for i in chunk), eos_id=eos,
                           tokenizer=tok, stop=BODY_STOPS)
    for i, o in zip(chunk, results):
      outs[i] = o
  return outs


def run(m, args, exercises=None):
  """``(settings, scores, rows)`` of the task for the loaded model ``m``
  (``phijax.evals.model_source.Loaded``). ``exercises`` replaces the stdlib's held-out ones
  (tests)."""
  from phijax.model import decode
  from phijax.data import exercises as data_ex

  fmt = getattr(args, "exercises_format", "text")
  if fmt not in FORMATS:
    raise ValueError(f"--exercises_format must be one of {FORMATS}, got {fmt!r}")
  tok = m.tokenizer
  if fmt == "chat" and getattr(tok, "eot_id", None) is None:
    raise ValueError("--exercises_format=chat needs a tokenizer with an end-of-turn token "
                     "('<|endofturn|>'), as phijax trains them; use --exercises_format=text")
  limit = getattr(args, "limit", None) or DEFAULT_LIMIT
  batch_size = int(getattr(args, "batch_size", None) or 16)
  max_new = int(getattr(args, "max_new_tokens", None) or 256)
  split = {"split_from": "given"}
  if exercises is None:
    split = _split_settings(m, args)
    exercises = data_ex.stdlib_exercises("heldout", path=split["stdlib_path"],
                                         heldout_fraction=split["heldout_fraction"])
  available = len(exercises)
  exercises = list(exercises)[:limit]
  if not exercises:
    raise ValueError(f"no held-out exercises to evaluate on ({split['split_from']}); "
                     "a larger heldout_fraction holds out more stdlib files")

  encoded = [encode(ex, tok, fmt) for ex in exercises]
  cap = m.cfg.max_position_embeddings
  fits = [len(e.ids) <= cap for e in encoded]
  kept = [i for i, ok in enumerate(fits) if ok]
  gen = decode.Generator(m.cfg, m.params)
  nll = np.full(len(exercises), np.nan)
  if kept:
    nll[kept] = response_nll(gen, [encoded[i] for i in kept], batch_size)
  tokens = np.asarray([int(e.target_mask.sum()) for e in encoded])
  body_bytes = np.asarray([len(ex.response.encode("utf-8")) for ex in exercises])

  budgets = [max(1, min(max_new, math.ceil(1.25 * n) + 16)) for n in tokens]
  t0 = time.time()
  outs = [None] * len(exercises)
  if kept:
    for i, o in zip(kept, _generate(gen, tok, [encoded[i] for i in kept],
                                    [budgets[i] for i in kept], fmt, batch_size)):
      outs[i] = o
  gen_s = time.time() - t0

  rows, exact = [], []
  for i, ex in enumerate(exercises):
    o = outs[i]
    body = body_of(o.text) if o is not None else None
    ok = o is not None and is_exact(ex.response, o.text)
    exact.append(ok)
    rows.append({"name": ex.name, "path": ex.path, "lineno": ex.lineno, "exact": ok,
                 "loss": None if not fits[i] else float(nll[i] / max(tokens[i], 1)),
                 "tokens": int(tokens[i]), "finish": o.finish if o else "too_long",
                 "generated": body})
  n_tok = int(tokens[kept].sum()) if kept else 0
  n_bytes = int(body_bytes[kept].sum()) if kept else 0
  total = float(nll[kept].sum()) if kept else 0.0
  scores = {"exercises": len(exercises),
            "exact_match": sum(exact) / max(len(exercises), 1),
            "ended": sum(o is not None and o.finish in ("eos", "stop") for o in outs)
                     / max(len(exercises), 1),
            "response_loss": total / max(n_tok, 1),
            "response_bpb": total / math.log(2) / max(n_bytes, 1),
            "response_tokens": n_tok, "too_long": len(exercises) - len(kept),
            "reference_over_budget": int((tokens > max_new).sum()),
            "generate_seconds": round(gen_s, 1)}
  settings = {"split": "heldout", **split, "exercises_available": available,
              "limit": limit, "format": fmt, "selection": dataclasses.asdict(
                  data_ex.Selection()) if split["split_from"] != "given" else None,
              "greedy": True, "max_new_tokens": max_new, "batch_size": batch_size,
              "stop": "end-of-text" + (" or end-of-turn" if fmt == "chat" else "") +
                      ", or a line that starts without indentation"}
  return settings, scores, rows
