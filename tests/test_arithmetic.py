"""Arithmetic tasks and position-encoding options: generated answers against Python
integer arithmetic in every format, the source through the data pipeline, ``nope``
and random position offsets against a plain-numpy forward pass, the ``arithmetic``
evaluation recounted from its rows, and one clear line for each kind of bad input."""

import argparse
import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phijax import cli, data, model
from phijax.config import default as default_config
from phijax.data import arithmetic as ar, config as data_config
from phijax.evals import arithmetic as arith_eval
from phijax.model import Transformer
from phijax.model.config import ModelConfig
from phijax.evals.model_source import Loaded

PY = {"+": lambda a, b: a + b, "*": lambda a, b: a * b}  # the reference: Python ints

# ------------------------------------------------------------------ the generator


@pytest.mark.parametrize("fmt", ar.FORMATS)
@pytest.mark.parametrize("op", ["+", "*"])
def test_answers_are_python_arithmetic_and_decode_back(fmt, op):
  rng = np.random.default_rng(7)
  width = 30
  for _ in range(400):
    la, lb = rng.integers(1, width + 1, size=2)
    a = int("".join(str(d) for d in rng.integers(0, 10, size=la)))
    b = int("".join(str(d) for d in rng.integers(0, 10, size=lb)))
    text = ar.encode(a, b, op, fmt, rng, width=width)
    assert ar.decode(text, fmt) == (a, b, op, PY[op](a, b))
    x, y, c = re.split(r"[+*=]", text)
    if fmt == "plain":
      assert text == f"{a}{op}{b}={PY[op](a, b)}"
    elif fmt == "reversed":
      assert (x, y, c) == (str(a)[::-1], str(b)[::-1], str(PY[op](a, b))[::-1])
    elif fmt == "padded":
      assert (len(x), len(y), len(c)) == (width, width, width + 1 if op == "+" else 2 * width)
      assert (int(x), int(y), int(c)) == (a, b, PY[op](a, b))
    else:  # spaces: only between operand digits; the answer is plain
      assert x.replace(" ", "") == str(a) and y.replace(" ", "") == str(b)
      assert c == str(PY[op](a, b)) and not x.startswith(" ") and not x.endswith(" ")


def test_documents_are_seeded_infinite_and_span_the_lengths():
  spec = ar.Spec(ops="+*", min_digits=2, max_digits=6, format="plain", seed=3)
  first = list(itertools.islice(spec.stream(), 2000))
  assert first == [spec.document(ar.TRAIN, i) for i in range(2000)]
  assert first[:50] == list(itertools.islice(ar.Spec(**{**spec.__dict__}).stream(), 50))
  assert first[:50] != list(itertools.islice(spec.__class__(
      ops="+*", min_digits=2, max_digits=6, seed=4).stream(), 50))
  heldout = list(itertools.islice(spec.stream(ar.HELDOUT), 2000))
  assert not set(first) & set(heldout)  # disjoint streams (4-12 digit problems)
  lengths = set()
  for text in first:
    a, b, op, c = ar.decode(text, "plain")
    assert c == PY[op](a, b)
    lengths |= {len(str(a)), len(str(b))}
  assert lengths == set(range(2, 7))
  # The same seed gives the same problems in every format.
  for fmt in ar.FORMATS:
    other = ar.Spec(ops="+*", min_digits=2, max_digits=6, format=fmt, seed=3)
    assert [ar.decode(other.document(0, i), fmt) for i in range(100)] == [
        ar.decode(t, "plain") for t in first[:100]]
  rng = np.random.default_rng(0)
  for d in (1, 2, 19, 40):
    ns = [ar.number(rng, d) for _ in range(200)]
    assert all(len(str(n)) == d for n in ns) and len(set(ns)) > 5


def test_heldout_split_is_stable_and_kept_out_of_training():
  share = 0.1
  # Stable: a hash of the problem (pinned here: a change to it would move held-out
  # problems into training between runs and their evaluations).
  held = sorted((a, b) for a in range(10) for b in range(10)
                if ar.in_heldout(ar.Problem(a, b, "+"), share))
  assert held == [(0, 4), (2, 7), (4, 3), (5, 0), (5, 6), (5, 9), (9, 0), (9, 3)]
  assert ar.in_heldout(ar.Problem(12, 34, "+"), share)
  assert not ar.in_heldout(ar.Problem(12, 34, "*"), share)
  assert not ar.in_heldout(ar.Problem(0, 4, "+"), 0.0)  # share 0: no split
  # The training stream skips held-out problems; the held-out stream has only them; in
  # every format and seed, the same split.
  for fmt, seed in (("plain", 0), ("spaces", 3), ("padded", 1)):
    spec = ar.Spec(min_digits=1, max_digits=3, format=fmt, seed=seed, heldout_share=share)
    for split, want in ((ar.TRAIN, False), (ar.HELDOUT, True)):
      for i in range(300):
        a, b, op, _ = ar.decode(spec.document(split, i), fmt)
        assert ar.in_heldout(ar.Problem(a, b, op), share) == want
  # The evaluation's problems, in range (1-3 digits) and past it, are all held out: none
  # is in the training stream, which does hold every other 1-digit problem.
  spec = ar.Spec(min_digits=1, max_digits=3, format="reversed", heldout_share=share)
  train = {ar.decode(t, "reversed")[:3] for t in itertools.islice(spec.stream(), 20_000)}
  one_digit = {(a, b, "+") for a in range(10) for b in range(10)}
  assert one_digit & train == {(a, b, "+") for a in range(10) for b in range(10)
                               if (a, b) not in held}
  scfg = data_config.arithmetic("+", 1, 3, "reversed", heldout_share=share).to_dict()
  run_config = {"data": {"sources": {"add": scfg}}}
  settings = arith_eval.settings_of(
      _eval_args(["--arith_digits=1-5", "--arith_per_length=50"]), run_config)
  assert settings["heldout_share"] == share
  rows = arith_eval.problems(settings)
  tested = [(r["a"], r["b"], r["op"]) for r in rows]
  assert len(set(tested)) == len(tested) and not set(tested) & train
  assert {p for p, r in zip(tested, rows) if r["digits"] == 1} == {(a, b, "+") for a, b in held}
  assert [sum(r["digits"] == d for r in rows) for d in range(1, 6)] == [8, 50, 50, 50, 50]
  # A run from before the split (no heldout_share in its config) trained on everything.
  del run_config["data"]["sources"]["add"]["heldout_share"]
  assert ar.spec_of_run(run_config).heldout_share == 0.0
  # So does the source built from that config.json (evaluate --task=bpb reads it), and a
  # resume of it keeps its problems rather than taking today's default share.
  import ml_collections
  from phijax.train import setup
  old = ml_collections.ConfigDict(run_config)
  assert ar.Spec.from_config("add", old.data.sources.add).heldout_share == 0.0
  c = default_config()
  c.data.sources = ml_collections.ConfigDict(
      {"add": data_config.arithmetic("+", 1, 3, "reversed")})
  setup.keep_problem_split(c, run_config)
  assert c.data.sources.add.heldout_share == 0.0
  c.data.sources.add.heldout_share = share  # a run that started with the split keeps it
  setup.keep_problem_split(c, {"data": {"sources": {"add": dict(scfg, heldout_share=share)}}})
  assert c.data.sources.add.heldout_share == share


def test_longest_document_bound_is_tight():
  for fmt in ar.FORMATS:
    for ops in ("+", "*", "+*"):
      spec = ar.Spec(ops=ops, min_digits=1, max_digits=4, format=fmt, width=5 * (fmt == "padded"))
      longest = max(len(spec.document(0, i)) for i in range(3000))
      assert longest <= spec.max_chars()
      if fmt != "spaces":  # spaces reach the bound only when every gap gets one
        assert longest >= spec.max_chars() - 1  # 9999+9999=19998: the bound is reached


# ------------------------------------------------------------------ the data source


@pytest.fixture(scope="module")
def arith_cfg(tmp_path_factory):
  c = default_config()
  c.data.sources = dict(add=data_config.arithmetic("+*", 3, 5, "reversed", size=300,
                                                   heldout=40, seed=5))
  c.data.seq_len = 64
  c.data.tokenizer.vocab_size = 300
  c.data.tokenizer.cache_dir = str(tmp_path_factory.mktemp("cache"))
  return c


@pytest.fixture(scope="module")
def arith_tok(arith_cfg):
  return data.load_tokenizer(arith_cfg.data)


def test_source_through_the_pipeline(arith_cfg, arith_tok):
  tok = arith_tok
  spec = ar.Spec(ops="+*", min_digits=3, max_digits=5, format="reversed", seed=5)
  train_docs = {spec.document(ar.TRAIN, i) for i in range(300)}
  it = data.make_train_iterator(arith_cfg.data, tok, batch_size=4, seed=0,
                                process_index=0, process_count=1)
  whole = 0
  for _ in range(3):
    batch = next(it)
    for r in range(4):
      seg = batch["segment_ids"][r]
      for s in np.unique(seg)[1:-1]:  # inner segments are whole documents
        idx = seg == s
        ids = batch["inputs"][r][idx]
        text = tok.decode(ids)
        assert len(ids) == len(text)  # one token per character
        assert batch["targets"][r][idx][-1] == tok.eos_id
        np.testing.assert_array_equal(batch["positions"][r][idx], np.arange(len(ids)))
        a, b, op, c = ar.decode(text, "reversed")
        assert c == PY[op](a, b) and text in train_docs
        whole += 1
  assert whole > 10
  heldout = data.heldout_documents(arith_cfg.data)
  assert heldout == [spec.document(ar.HELDOUT, j) for j in range(40)]
  evals = data.make_eval_batches(arith_cfg.data, tok, batch_size=2, num_batches=1,
                                 process_index=0, process_count=1)
  first = evals[0]["inputs"][0][evals[0]["segment_ids"][0] == 1]
  assert tok.decode(first) == heldout[0]


def test_source_bad_input_is_one_clear_line(arith_cfg, tmp_path):
  def build(**kw):
    scfg = data_config.arithmetic(**kw)
    return data.sources.build_source("arith", scfg, 0.05, seq_len=64)

  cases = [
      (dict(ops="-"), r"config.data.sources.arith.ops: '-' must be made of '\+\*'"),
      (dict(min_digits=0), "arith.min_digits: must be >= 1"),
      (dict(min_digits=4, max_digits=3), "arith.max_digits: 3 is below min_digits=4"),
      (dict(format="roman"), "arith.format: 'roman' is not one of"),
      (dict(format="padded", max_digits=6, width=4), "arith.width: 4 is below max_digits=6"),
      (dict(size=0), "arith.size must be >= 1"),
      (dict(heldout_share=1.0), r"arith.heldout_share: must be in \[0, 1\), got 1.0"),
      (dict(ops="*", max_digits=20), r"up to max_digits=20 digits in format 'plain' "
       r"takes up to 82 tokens .* more than config.data.seq_len=64; lower "
       r"config.data.sources.arith.max_digits"),
  ]
  for kw, msg in cases:
    with pytest.raises(data.DataError, match=msg) as e:
      build(**kw)
    assert "\n" not in str(e.value)
  # The train loop refuses it before it writes anything to the run directory.
  from phijax import train
  c = default_config()
  c.data.sources = dict(add=data_config.arithmetic("*", max_digits=20))
  c.data.seq_len = 64
  c.train.compile_cache_dir = ""
  workdir = tmp_path / "run"
  with pytest.raises(data.DataError, match="more than config.data.seq_len=64"):
    train.train(c, str(workdir))
  assert not workdir.exists() or not any(workdir.iterdir())
  for call, msg in [
      (lambda: ar.encode(1, 2, "+", "padded"), "needs width="),
      (lambda: ar.encode(12345, 2, "+", "padded", width=4), "12345 has 5 digits, more than"),
      (lambda: ar.encode(1, 2, "+", "spaces"), "needs rng="),
      (lambda: ar.encode(1, 2, "-", "plain"), "op '-' is not one of"),
      (lambda: ar.decode("1 2+3=15", "plain"), "not an arithmetic document in format"),
      (lambda: ar.decode("12+3=", "plain"), "is not a number"),
  ]:
    with pytest.raises(ValueError, match=msg):
      call()


# ------------------------------------------------------------------ the model options

TINY = ModelConfig(arch="phi", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
                   intermediate_size=64, partial_rotary_factor=0.5, max_position_embeddings=64,
                   init_std=0.3)  # large weights: attention, so positions, matter


def _reference_logits(cfg, p, tokens, positions, rotary):
  """The phi forward pass in float64 numpy, written from the equations: parallel
  block, LayerNorm, rotate-half rotary on the first rotary dims (as complex numbers)
  or none, causal softmax attention, tanh-GELU MLP."""
  p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), p)

  def ln(x, w):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + cfg.layer_norm_eps) * w["scale"] + w["bias"]

  E = cfg.hidden_size // cfg.num_heads
  r = int(E * cfg.partial_rotary_factor)

  def rotate(x):  # [B, T, H, E]
    half = r // 2
    freqs = cfg.rope_theta ** (-np.arange(half) * 2.0 / r)
    angle = positions[:, :, None, None] * freqs
    z = (x[..., :half] + 1j * x[..., half:r]) * np.exp(1j * angle)
    return np.concatenate([z.real, z.imag, x[..., r:]], axis=-1)

  T = tokens.shape[1]
  x = p["embed"][tokens]
  causal = np.tril(np.ones((T, T), bool))
  for i in range(cfg.num_layers):
    lp = p[f"layers_{i}"]
    at = lp["attn"]
    h = ln(x, lp["input_norm"])
    q, k, v = (np.einsum("btd,dhe->bthe", h, at[n]["kernel"]) + at[n]["bias"]
               for n in ("q_proj", "k_proj", "v_proj"))
    if rotary:
      q, k = rotate(q), rotate(k)
    s = np.einsum("bthe,bshe->bhts", q, k) / math.sqrt(E)
    s = np.where(causal, s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("bhts,bshe->bthe", w, v)
    a = np.einsum("bthe,hed->btd", o, at["o_proj"]["kernel"]) + at["o_proj"]["bias"]
    f = h @ lp["mlp"]["fc1"]["kernel"] + lp["mlp"]["fc1"]["bias"]
    f = 0.5 * f * (1 + np.tanh(math.sqrt(2 / math.pi) * (f + 0.044715 * f ** 3)))
    x = x + a + f @ lp["mlp"]["fc2"]["kernel"] + lp["mlp"]["fc2"]["bias"]
  return ln(x, p["final_norm"]) @ p["lm_head"] + p["lm_head_bias"]


def _tokens(B=3, T=12, seed=0):
  return np.random.default_rng(seed).integers(0, 64, (B, T)).astype(np.int32)


def test_nope_and_rope_equal_the_reference():
  tokens = _tokens()
  positions = np.broadcast_to(np.arange(12), (3, 12))
  for pe in ("rope", "nope"):
    cfg = TINY.replace(position_encoding=pe)
    params = model.init_params(cfg, jax.random.key(1))
    got = np.asarray(Transformer(cfg).apply({"params": params}, jnp.asarray(tokens)))
    ref = _reference_logits(cfg, params, tokens, positions, rotary=pe == "rope")
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)
    other = _reference_logits(cfg, params, tokens, positions, rotary=pe != "rope")
    assert np.abs(got - other).max() > 1e-3  # the two references do differ


@pytest.mark.parametrize("arch", ["phi", "phi3"])
def test_nope_one_layer_ignores_the_order_of_the_prefix(arch):
  """Without positions, one causal layer's last output depends on the set of earlier
  tokens only; with rotary it depends on their order."""
  base = dict(arch=arch, vocab_size=64, hidden_size=32, num_layers=1, num_heads=4,
              intermediate_size=64)
  tokens = _tokens(1, 10)
  shuffled = tokens.copy()
  shuffled[0, :9] = tokens[0, :9][::-1]
  for pe, invariant in (("nope", True), ("rope", False)):
    cfg = ModelConfig(**base, position_encoding=pe)
    params = model.init_params(cfg, jax.random.key(2))
    last = [np.asarray(Transformer(cfg).apply({"params": params}, jnp.asarray(t)))[0, -1]
            for t in (tokens, shuffled)]
    diff = np.abs(last[0] - last[1]).max()
    assert (diff < 1e-5) if invariant else (diff > 1e-4)


def test_random_offsets_shift_positions_and_rope_is_shift_invariant():
  cfg = TINY.replace(random_position_offset=True)
  plain = TINY
  params = model.init_params(cfg, jax.random.key(3))
  B, T = 8, 12
  tokens = _tokens(B, T, seed=4)
  segment_ids = np.ones((B, T), np.int32)
  segment_ids[:, 7:] = 2  # packed rows: positions restart at the second document
  positions = np.concatenate([np.arange(7), np.arange(5)])[None].repeat(B, 0).astype(np.int32)

  def train_apply(key):
    out, aux = Transformer(cfg).apply(
        {"params": params}, jnp.asarray(tokens), jnp.asarray(positions),
        jnp.asarray(segment_ids), deterministic=False, rngs={"dropout": key},
        mutable=["intermediates"])
    return np.asarray(out), np.asarray(aux["intermediates"]["positions"][0])

  logits, used = train_apply(jax.random.key(5))
  offsets = used - positions
  assert (offsets == offsets[:, :1]).all()  # one offset per row
  assert offsets.min() >= 0 and used.max() < cfg.max_position_embeddings
  assert len(set(offsets[:, 0])) > 3  # rows get different offsets
  again, used_again = train_apply(jax.random.key(5))
  np.testing.assert_array_equal(used_again, used)
  assert not np.array_equal(train_apply(jax.random.key(6))[1], used)
  # The same logits as the model without offsets given the shifted positions...
  explicit = np.asarray(Transformer(plain).apply(
      {"params": params}, jnp.asarray(tokens), jnp.asarray(used), jnp.asarray(segment_ids)))
  np.testing.assert_allclose(logits, explicit, atol=1e-6)
  ref = _reference_logits(plain, params, tokens[:, :7], used[:, :7], rotary=True)
  np.testing.assert_allclose(logits[:, :7], ref, atol=2e-5, rtol=1e-5)
  # ...and, rotary scores depending on position differences only, (in float32) the
  # logits without any offset.
  unshifted = np.asarray(Transformer(plain).apply(
      {"params": params}, jnp.asarray(tokens), jnp.asarray(positions),
      jnp.asarray(segment_ids)))
  np.testing.assert_allclose(logits, unshifted, atol=1e-5)
  # Evaluation (deterministic) takes the positions as given.
  evaluated = np.asarray(Transformer(cfg).apply(
      {"params": params}, jnp.asarray(tokens), jnp.asarray(positions),
      jnp.asarray(segment_ids)))
  np.testing.assert_array_equal(evaluated, unshifted)


def test_model_options_bad_input_and_hf_export(tmp_path):
  from phijax import convert
  from phijax.convert.hf_config import model_config_to_hf
  for kw, msg in [
      (dict(position_encoding="alibi"), "model config: position_encoding: 'alibi' is not one of"),
      (dict(position_encoding="nope", random_position_offset=True),
       "model config: random_position_offset: shifts rotary positions"),
  ]:
    with pytest.raises(ValueError, match=msg):
      TINY.replace(**kw)
  nope = TINY.replace(position_encoding="nope")
  assert nope.rotary_dim == 0
  assert ModelConfig.from_dict(nope.to_dict()) == nope
  with pytest.raises(ValueError, match="position_encoding='nope' has no Hugging Face"):
    convert.to_hf(nope, model.init_params(nope, jax.random.key(0)), str(tmp_path / "hf"))
  assert not (tmp_path / "hf").exists()
  assert model_config_to_hf(TINY.replace(random_position_offset=True)) == model_config_to_hf(TINY)


# ------------------------------------------------------------------ the evaluation


def _eval_args(argv):
  parser = argparse.ArgumentParser()
  arith_eval.add_args(parser.add_argument_group("arithmetic"))
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--seed", type=int, default=0)
  return parser.parse_args(argv)


def _loaded(cfg, params, tok, run_config=None):
  return Loaded(cfg, params, tok, "test model", "", run_config=run_config)


def _greedy_without_cache(forward, params, ids, max_new, eos, length=32):
  """Greedy decoding by full forward passes over a fixed-length buffer (no KV cache;
  causal, so the padding after the last token changes nothing): the reference."""
  buf = np.zeros((1, length), np.int32)
  buf[0, :len(ids)] = ids
  n, out = len(ids), []
  for _ in range(max_new):
    nxt = int(np.argmax(np.asarray(forward(params, jnp.asarray(buf)))[0, n - 1]))
    if nxt == eos:
      return out, "eos"
    out.append(nxt)
    buf[0, n] = nxt
    n += 1
  return out, "length"


def test_eval_on_a_random_model_recounts_from_its_rows(arith_cfg, arith_tok):
  tok = arith_tok
  cfg = ModelConfig(arch="phi", vocab_size=tok.vocab_size, hidden_size=32, num_layers=2,
                    num_heads=4, intermediate_size=64, max_position_embeddings=64)
  params = model.init_params(cfg, jax.random.key(0))
  # Make end-of-text likely, so that some rows stop by themselves.
  params["lm_head_bias"] = params["lm_head_bias"].at[tok.eos_id].set(2.0)
  run_config = {"data": {"sources": {"add": arith_cfg.data.sources.add.to_dict()}}}
  m = _loaded(cfg, params, tok, run_config)
  settings, scores, rows = arith_eval.run(m, _eval_args(["--arith_per_length=3",
                                                          "--batch_size=16"]))
  # Defaults from the run's source: ops, format, lengths 1..max_digits + 2.
  assert (settings["ops"], settings["format"], settings["digits"]) == ("+*", "reversed", [1, 7])
  assert len(rows) == 7 * 2 * 3 == scores["problems"]
  for r in rows:
    assert len(str(r["a"])) == len(str(r["b"])) == r["digits"]
    assert r["expected"] == str(PY[r["op"]](r["a"], r["b"]))[::-1]
    assert r["prompt"] == f"{str(r['a'])[::-1]}{r['op']}{str(r['b'])[::-1]}="
    assert r["correct"] == (r["finish"] == "eos" and r["output"] == r["expected"])
  by = {d: [r["correct"] for r in rows if r["digits"] == d] for d in range(1, 8)}
  assert scores["accuracy_by_digits"] == {str(d): sum(v) / len(v) for d, v in by.items()}
  def places_right(output, answer):  # reversed: the output starts at the units
    if not (output.isascii() and output.isdigit()):
      return 0
    units_first = str(int(output[::-1]))[::-1]  # as a number: no leading zeros
    return sum(x == y for x, y in zip(str(answer)[::-1], units_first))
  for d in range(1, 8):  # digit accuracy, recounted place by place from the outputs
    mine = [r for r in rows if r["digits"] == d]
    answers = [PY[r["op"]](r["a"], r["b"]) for r in mine]
    right = sum(places_right(r["output"], c) for r, c in zip(mine, answers))
    assert scores["digit_accuracy_by_digits"][str(d)] == pytest.approx(
        right / sum(len(str(c)) for c in answers))
  assert scores["accuracy"] == sum(r["correct"] for r in rows) / len(rows)
  assert {r["finish"] for r in rows} >= {"eos"}
  forward = jax.jit(lambda p, t: Transformer(cfg).apply({"params": p}, t))
  for r in rows[::15]:  # greedy decoding, as full forward passes would do it
    want = len(ar.char_ids(tok, r["expected"])) + 1
    ids, finish = _greedy_without_cache(forward, params, ar.char_ids(tok, r["prompt"]), want,
                                        tok.eos_id)
    assert (tok.decode(ids), finish) == (r["output"], r["finish"])


class _Oracle:
  """A stand-in generator: right answers for some problems, wrong ones (or a right
  answer without end-of-text) for others; it logs what it decided."""
  log = []

  def __init__(self, cfg, params):
    pass

  def generate(self, prompts, *, max_new_tokens, eos_id, tokenizer):
    from phijax.model.decode import Output
    outs = []
    for ids in prompts:
      a, b, op, _ = ar.decode(tokenizer.decode(ids) + "0", "plain")
      answer = str(PY[op](a, b))
      kind = ("right", "wrong", "no_eos")[(a + b) % 3]
      self.log.append((len(str(a)), kind == "right"))
      text = {"right": answer, "wrong": answer + "1", "no_eos": answer}[kind]
      outs.append(Output(ar.char_ids(tokenizer, text), "eos" if kind != "no_eos" else "length",
                         text))
    return outs


def test_eval_scores_count_exact_answers_by_length(arith_tok, monkeypatch):
  from phijax.model import decode
  monkeypatch.setattr(decode, "Generator", _Oracle)
  _Oracle.log = []
  cfg = TINY.replace(vocab_size=arith_tok.vocab_size)
  settings, scores, rows = arith_eval.run(
      _loaded(cfg, None, arith_tok),
      _eval_args(["--arith_digits=2-4", "--arith_per_length=30", "--arith_ops=+"]))
  assert (settings["format"], settings["from_run_config"]) == ("plain", False)
  expect = {str(d): np.mean([ok for n, ok in _Oracle.log if n == d]) for d in (2, 3, 4)}
  assert scores["accuracy_by_digits"] == pytest.approx(expect)
  assert 0 < scores["accuracy"] < 1


def test_digits_right_counts_places_from_the_units():
  for output, fmt, want in [
      ("168", "plain", (3, 3)), ("178", "plain", (2, 3)), ("68", "plain", (2, 3)),
      ("1168", "plain", (3, 3)), ("861", "reversed", (3, 3)), ("86", "reversed", (2, 3)),
      ("00000168", "padded", (3, 3)), ("00000268", "padded", (2, 3)),
      ("1 68", "spaces", (3, 3)), ("1 68", "plain", (0, 3)), ("", "plain", (0, 3)),
      ("=16", "plain", (0, 3))]:
    assert arith_eval.digits_right(output, 168, fmt) == want, (output, fmt)


def test_eval_bad_input_is_one_clear_line(arith_tok):
  cfg = TINY.replace(vocab_size=arith_tok.vocab_size, max_position_embeddings=32)
  m = _loaded(cfg, None, arith_tok)
  for argv, msg in [
      (["--arith_digits=1-12", "--arith_ops=*"], r"--arith_digits up to 12: a 12-digit "
       r"problem in format 'plain' takes up to 51 positions .* more than the model's "
       r"max_position_embeddings=32; lower --arith_digits"),
      (["--arith_format=padded", "--arith_width=3", "--arith_digits=1-5"],
       "padded width 3 .* is below the longest tested operands"),
      (["--arith_ops=-"], "--arith_ops='-': use"),
  ]:
    with pytest.raises(cli.UsageError, match=msg) as e:
      arith_eval.run(m, _eval_args(argv))
    assert "\n" not in str(e.value)
  for bad in ("x", "5-2", "0-3"):
    with pytest.raises(argparse.ArgumentTypeError):
      arith_eval.digit_range(bad)
  assert arith_eval.digit_range("3") == (3, 3)


def test_eval_defaults_follow_the_run():
  def settings(argv, **source):
    scfg = data_config.arithmetic(**source).to_dict()
    return arith_eval.settings_of(_eval_args(argv), {"data": {"sources": {"s": scfg}}})

  got = settings([], ops="*", max_digits=4, format="spaces")
  assert (got["ops"], got["format"], got["digits"], got["from_run_config"]) == (
      "*", "spaces", [1, 6], True)
  assert settings([], max_digits=3, format="padded")["digits"] == [1, 3]  # the width
  assert settings([], max_digits=3, format="padded", width=8)["digits"] == [1, 5]
  assert settings(["--arith_format=plain", "--arith_digits=2-9"], max_digits=3)[
      "digits"] == [2, 9]
  assert settings([], max_digits=3, weight=0.0)["from_run_config"] is False
