"""The DPO loss against a numpy computation from per-sequence log-probabilities."""

import jax.numpy as jnp
import numpy as np

from phijax.train import losses


def _np_log_softmax(x):
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_sequence_logprobs_sum_the_masked_token_logprobs():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((3, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, (3, 5))
  mask = rng.random((3, 5)) < 0.6
  logp = _np_log_softmax(logits.astype(np.float64))
  expected = [sum(logp[b, t, targets[b, t]] for t in range(5) if mask[b, t])
              for b in range(3)]
  got = losses.sequence_logprobs(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_dpo_loss_equals_numpy():
  rng = np.random.default_rng(1)
  pc, pr, rc, rr = (rng.normal(-20, 5, 6) for _ in range(4))
  beta = 0.1
  margin = beta * ((pc - rc) - (pr - rr))
  expected = np.log1p(np.exp(-margin))  # -log sigmoid(margin)
  loss, m = losses.dpo_loss(*(jnp.asarray(x, jnp.float32) for x in (pc, pr, rc, rr)), beta)
  np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(m["reward_margin"]), margin, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(m["reward_accuracy"]), (margin > 0).astype(float))
  # Policy equal to the reference: every reward 0, loss log 2.
  loss0, m0 = losses.dpo_loss(*(jnp.asarray(pc, jnp.float32),) * 4, beta)
  np.testing.assert_allclose(np.asarray(loss0), np.log(2.0), rtol=1e-6)


# ------------------------------------------------------------- DPO training

import json  # noqa: E402
import os  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402
from flax import linen as nn  # noqa: E402

from phijax import data  # noqa: E402
from phijax.data import preferences, sft  # noqa: E402
from phijax.model import Transformer, abstract_params  # noqa: E402
from phijax.model.config import ModelConfig  # noqa: E402
from tests.test_data import _cfg, _corpus_texts  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = [{"prompt": f"write f{i}", "chosen": f"def f{i}():\n    return {i}\n",
          "rejected": f"    return {i}\ndef f{i}():\n"} for i in range(40)]


@pytest.fixture(scope="module")
def tok():
  return data.train_tokenizer(_corpus_texts(), vocab_size=400)


def test_pair_rows_put_chosen_then_rejected_with_response_masks(tok):
  rendered = [preferences.render_pair(p, tok, "plain", 64) for p in PAIRS[:2]]
  rows = preferences.pair_rows(rendered, 64, tok.pad_id, real=1)
  for side in (0, 1):
    for b in range(2):
      ids, mask, _ = sft.render([("user", PAIRS[b]["prompt"]),
                                 ("assistant", PAIRS[b]["chosen" if side == 0 else "rejected"])],
                                tok, 64)
      r, n = side * 2 + b, len(ids) - 1
      assert rows["inputs"][r, :n].tolist() == ids[:-1].tolist()
      assert rows["targets"][r, :n].tolist() == ids[1:].tolist()
      learn = mask[1:].tolist() if b == 0 else [False] * n  # pair 1 is padding
      assert (rows["loss_mask"][r, :n] > 0).tolist() == learn
      assert rows["segment_ids"][r].tolist() == [1] * n + [0] * (64 - n)
  assert rows["pair_mask"][:, 0].tolist() == [1, 0, 1, 0]


def test_bad_pairs_are_one_clear_error(tmp_path, tok):
  (tmp_path / "p.jsonl").write_text(json.dumps(PAIRS[0]) + "\n" +
                                    json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
  with pytest.raises(data.DataError, match=r"p.jsonl:2: a preference record needs string "
                                           r"fields 'prompt', 'chosen' and 'rejected'"):
    data.build_sources(_cfg(tmp_path / "p.jsonl", kind="preferences"))
  (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
  with pytest.raises(data.DataError, match="train with --config.train.objective=dpo"):
    next(data.make_train_iterator(_cfg(tmp_path / "p.jsonl", kind="preferences"), tok,
                                  batch_size=2, seed=0, process_index=0, process_count=1))


def test_dpo_step_loss_equals_numpy_from_independent_forwards(tok):
  from ml_collections import ConfigDict

  from phijax.model import sharding
  from phijax.train import optim
  from phijax.train.step import PAIR_KEYS, build, device_batch
  cfg = ModelConfig(arch="phi", vocab_size=512, hidden_size=32, num_layers=2, num_heads=4,
                    intermediate_size=64, max_position_embeddings=64)
  rng = np.random.default_rng(0)
  shapes = nn.unbox(abstract_params(cfg))
  policy = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
  ref = jax.tree.map(lambda p: p + (0.05 * rng.standard_normal(p.shape)).astype(p.dtype),
                     policy)
  mesh = sharding.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  fns = build(cfg, optim.make_direction(ConfigDict(dict(
      name="sgd", lr=0.0, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, clip=0.0,
      muon_beta=0.95, muon_rms=0.2))), mesh, sharding.DEFAULT_RULES, objective="dpo",
      dpo_beta=0.5)
  state = fns.init(jax.random.key(0)).replace(params=policy)
  rendered = [preferences.render_pair(p, tok, "plain", 48) for p in PAIRS[:3]]
  batch = preferences.pair_rows(rendered, 48, tok.pad_id)
  _, m = fns.train_step(state, device_batch(batch, fns.batch_sharding, keys=PAIR_KEYS),
                        jnp.float32(0.0), ref)

  # Each sequence's own plain forward (no segment ids, positions from 0), the six in one
  # batch: causal, so the padding after a sequence changes none of its logits.
  seqs = [rendered[b][side] for side in (0, 1) for b in range(3)]
  padded = np.zeros((len(seqs), max(len(ids) for ids, _ in seqs) - 1), np.int32)
  for i, (ids, _) in enumerate(seqs):
    padded[i, :len(ids) - 1] = ids[:-1]

  def seq_logps(params):
    logits = np.asarray(Transformer(cfg).apply({"params": params}, padded))
    logp = _np_log_softmax(logits.astype(np.float64))
    return [sum(logp[i, t, ids[t + 1]] for t in range(len(ids) - 1) if mask[t + 1])
            for i, (ids, mask) in enumerate(seqs)]

  pol, rf = seq_logps(policy), seq_logps(ref)  # chosen rows 0..2, rejected rows 3..5
  margins = [0.5 * ((pol[b] - rf[b]) - (pol[3 + b] - rf[3 + b])) for b in range(3)]
  expected = np.mean([np.log1p(np.exp(-x)) for x in margins])
  assert float(m["loss"]) == pytest.approx(expected, abs=1e-4)
  assert float(m["reward_margin"]) == pytest.approx(np.mean(margins), abs=1e-4)
  assert float(m["reward_accuracy"]) == pytest.approx(np.mean(np.array(margins) > 0))


def test_dpo_run_from_a_pretrained_run(tmp_path, capsys):
  # In this process (the two runs share its start-up), as python -m phijax.train runs.
  from phijax import config_files
  from phijax.train import loop
  common = ["--config.train.batch_size=4", "--config.train.samples=0",
            "--config.train.progress=false"]
  # The warm start only needs its checkpoint: one held-out batch for its final eval.
  loop.train(config_files.load("tiny:runlocal", [
      *common, "--config.train.steps=3", "--config.train.final_eval_batches=1"]),
      str(tmp_path / "pre"))
  (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
  loop.train(config_files.load("tiny:runlocal", [
      *common, "--config.train.steps=6", "--config.train.objective=dpo",
      f"--config.train.init_from={tmp_path}/pre", "--config.train.log_every=1",
      "--config.train.eval_every=3", "--config.data.heldout_fraction=0.2",
      "--config.optim.lr=3e-3", "--config.curriculum.lr.warmup_steps=0",
      "--config.data.sources.stdlib.kind=preferences",
      f"--config.data.sources.stdlib.path={tmp_path}/pairs.jsonl"]), str(tmp_path / "dpo"))
  rows = [json.loads(l) for l in open(tmp_path / "dpo" / "metrics.jsonl")]
  train_rows = [r for r in rows if "loss" in r]
  # Step 1: the policy is its reference (the warm start, dropout off): loss ln 2.
  assert train_rows[0]["loss"] == pytest.approx(np.log(2.0), abs=1e-5)
  assert train_rows[0]["reward_margin"] == pytest.approx(0.0, abs=1e-5)
  # A warm start evaluates before its first step too (train.eval_at_start): there the
  # policy is still its reference, so the held-out DPO loss is ln 2 exactly.
  start = [r for r in rows if r["step"] == 0]
  assert len(start) == 1 and start[0]["eval_loss"] == pytest.approx(np.log(2.0), abs=1e-5)
  final = [r for r in rows if r.get("final")][-1]
  assert final["eval_pairs"] > 0 and 0.0 <= final["eval_reward_accuracy"] <= 1.0
  assert "held-out DPO loss" in capsys.readouterr().out


# ------------------------------------------- the SFT baseline and held-out scores

def test_chosen_source_is_the_chosen_side_as_sft_with_the_pairs_split(tmp_path, tok):
  """kind "chosen" reads a preferences file as SFT conversations (prompt, chosen), with
  the preferences source's train / held-out split, and trains as SFT: packed rows
  whose loss falls on the chosen responses and their end-of-turn only."""
  path = tmp_path / "p.jsonl"
  path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
  prefs, chosen = (data.build_sources(_cfg(path, kind=k, heldout=0.2))["main"]
                   for k in ("preferences", "chosen"))
  assert chosen.heldout.tolist() == prefs.heldout.tolist()
  assert 0 < chosen.heldout.sum() < len(PAIRS)
  assert [chosen.conversation(i) for i in range(len(PAIRS))] == [
      [("user", p["prompt"]), ("assistant", p["chosen"])] for p in PAIRS]
  train = {p["chosen"] for k, p in enumerate(PAIRS) if not prefs.heldout[k]}
  it = data.make_train_iterator(_cfg(path, kind="chosen", heldout=0.2), tok, batch_size=2,
                                seed=0, process_index=0, process_count=1)
  learned = []
  for row in (r for b in (next(it) for _ in range(3)) for r in zip(
      b["targets"], b["loss_mask"], b["segment_ids"])):
    targets, mask, seg = (np.asarray(x) for x in row)
    for s in set(seg[seg > 0].tolist()):
      ids = targets[(seg == s) & (mask > 0)].tolist()
      assert ids[-1] == tok.eot_id
      learned.append(tok.decode(ids[:-1]))
  assert learned and set(learned) <= train


def test_held_out_pair_scores_equal_per_sequence_log_probs(tok):
  """evals.preferences: each response's logp is its own forward's, and the reward
  columns are DPO's (0 and ln 2 for a policy equal to its reference)."""
  from phijax.evals import model_source, preferences as pref_eval
  cfg = ModelConfig(arch="phi", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1,
                    num_heads=4, intermediate_size=64, max_position_embeddings=64)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
                        nn.unbox(abstract_params(cfg)))
  m = model_source.Loaded(cfg, params, tok, "random", "unused")
  pairs = PAIRS[:5]
  chosen, rejected = pref_eval.pair_logps(m, pairs, batch_size=4)
  forward = jax.jit(Transformer(cfg).apply)
  for k, p in enumerate(pairs):
    for side, got in (("chosen", chosen[k]), ("rejected", rejected[k])):
      ids, mask, _ = sft.render([("user", p["prompt"]), ("assistant", p[side])], tok, 64)
      logp = _np_log_softmax(np.asarray(forward({"params": params}, ids[None, :-1])[0],
                                        np.float64))
      want = sum(logp[t, ids[t + 1]] for t in range(len(ids) - 1) if mask[t + 1])
      assert got == pytest.approx(want, rel=1e-4)
  same = pref_eval.scores((chosen, rejected), (chosen, rejected))
  assert same["pref_accuracy"] == np.mean(chosen > rejected)
  assert same["reward_margin"] == same["reward_accuracy"] == 0.0
  assert same["dpo_loss"] == pytest.approx(np.log(2.0))
  # Margins 0.5 ((-1 + 1) - (-2 + 1)) = 0.5 and 0.5 ((-5 + 1) - (-3 + 1)) = -1.
  got = pref_eval.scores(([-1.0, -5.0], [-2.0, -3.0]), ([-1.0, -1.0], [-1.0, -1.0]), 0.5)
  assert got == pytest.approx({
      "pref_accuracy": 0.5, "logp_margin": -0.5, "logp_chosen": -3.0,
      "reward_accuracy": 0.5, "reward_margin": -0.25,
      "dpo_loss": (np.log1p(np.exp(-0.5)) + np.log1p(np.exp(1.0))) / 2})
  assert "reward_margin" not in pref_eval.scores(([-1.0], [-2.0]))
  with pytest.raises(ValueError, match="longer than the model's context"):
    pref_eval.pair_logps(m, [dict(PAIRS[0], chosen="x = 1\n" * 64)])
