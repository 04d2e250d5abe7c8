"""Chat templates for SFT data, and the SFT loss: only response tokens count, and a
packed row gives each conversation the logits it gets alone."""

import json

import jax
import numpy as np
import pytest
from flax import linen as nn

from phijax import data
from phijax.train import losses
from phijax.data import sft
from phijax.model import Transformer, abstract_params
from phijax.model.config import ModelConfig
from tests.test_data import _cfg, _corpus_texts

TURNS = [("system", "be brief"), ("user", "add a and b"), ("assistant", "a + b"),
         ("user", "now subtract"), ("assistant", "a - b")]


@pytest.fixture(scope="module")
def tok():
  return data.train_tokenizer(_corpus_texts(), vocab_size=400)


def test_tokenizers_trained_here_reserve_the_chat_pieces(tok):
  for piece in ("<|endoftext|>", "<|endofturn|>", *sft.PHI3_PIECES.values()):
    i = tok.special_id(piece)
    assert i is not None and tok.id_to_piece(i) == piece
    assert i not in tok.encode(piece)  # special pieces are never read from text
  assert tok.decode(tok.encode("x = '<|end|>'")) == "x = '<|end|>'"


def test_phi3_template_matches_the_chat_format(tok):
  ids, learn, cut = sft.render(TURNS, tok, 1000, template="phi3")
  P = {k: tok.special_id(v) for k, v in sft.PHI3_PIECES.items()}
  expected, expected_learn = [], []
  for role, text in TURNS:  # <|role|>\n{text}<|end|>\n, learning {text}<|end|> of answers
    body = tok.encode("\n" + text) + [P["end"]]
    expected += [P[role]] + body + tok.encode("\n")
    expected_learn += [False] + [role == "assistant"] * len(body) + [False] * len(
        tok.encode("\n"))
  assert ids.tolist() == expected and learn.tolist() == expected_learn and cut == 0
  learned = [i for i, l in zip(ids.tolist(), learn) if l]
  assert learned.count(P["end"]) == 2
  assert tok.decode([i for i in learned if i != P["end"]]) == "\na + b\na - b"
  prompt = sft.prompt_ids(TURNS[:2], tok, "phi3")
  assert prompt[-1 - len(tok.encode("\n")):] == [P["assistant"]] + tok.encode("\n")


def test_phi15_and_plain_templates(tok):
  turns = [("user", "add a and b"), ("assistant", "a + b")]
  ids, learn, _ = sft.render(turns, tok, 1000, template="phi15")
  assert tok.decode(ids) == "Instruct: add a and b\nOutput: a + b\n"  # eot decodes to ""
  learned = [i for i, l in zip(ids.tolist(), learn) if l]
  assert learned == tok.encode("a + b") + [tok.eot_id]
  assert tok.decode(sft.prompt_ids(turns[:1], tok, "phi15")) == (
      "Instruct: add a and b\nOutput:")
  ids, learn, _ = sft.render(turns, tok, 1000)  # plain: turns and end-of-turn tokens
  assert ids.tolist() == (tok.encode("add a and b") + [tok.eot_id] + tok.encode("a + b")
                          + [tok.eot_id])


def test_unknown_template_and_missing_pieces_are_one_clear_error(tmp_path, tok):
  (tmp_path / "c.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
  with pytest.raises(data.DataError, match="data source 'main': unknown chat template "
                                           "'chatml'; choose one of plain, phi3, phi15"):
    data.build_sources(_cfg(tmp_path / "c.jsonl", kind="sft", template="chatml"))

  class OldTokenizer:  # a tokenizer without the phi-3 pieces
    name, eot_id = "old.model", 3

    def special_id(self, piece):
      return None

  with pytest.raises(data.DataError, match="has no '<\\|user\\|>' token"):
    sft.render(TURNS[1:], OldTokenizer(), 100, template="phi3")


def test_sft_loss_is_the_response_only_loss_and_packing_changes_no_logit(tmp_path, tok):
  records = [{"messages": [{"role": r, "content": t} for r, t in TURNS]},
             {"prompt": "what is x?", "response": "x = 1"},
             {"prompt": "name it", "response": "def f(): pass"}]
  (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  cfg = _cfg(tmp_path / "chat.jsonl", kind="sft", template="phi3", seq_len=128)
  batch = next(data.make_train_iterator(cfg, tok, batch_size=1, seed=0,
                                        process_index=0, process_count=1))
  assert batch["segment_ids"].max() >= 3  # several conversations packed into one row
  model_cfg = ModelConfig(arch="phi3", vocab_size=512, hidden_size=32, num_layers=2,
                          num_heads=4, num_kv_heads=2, intermediate_size=64,
                          max_position_embeddings=256)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
                        nn.unbox(abstract_params(model_cfg)))
  model = Transformer(model_cfg)
  packed = np.asarray(model.apply({"params": params}, batch["inputs"], batch["positions"],
                                  batch["segment_ids"]))
  nll, _ = losses.token_losses(packed, batch["targets"])
  mask = batch["loss_mask"]
  packed_loss = float(losses.masked_sum(nll, mask)) / float(mask.sum())

  # Independently: each conversation alone, its own rendering, numpy cross entropy
  # over the tokens that follow a response position.
  total, count = 0.0, 0
  seg = batch["segment_ids"][0]
  for s in range(1, seg.max() + 1):
    where = seg == s
    ids = batch["inputs"][0][where]
    alone = np.asarray(model.apply({"params": params}, ids[None]))[0]
    np.testing.assert_allclose(packed[0][where], alone, atol=1e-5, rtol=0)
    conv = next(r for r in records if _render(r, tok)[0][:-1].tolist() == ids.tolist())
    full_ids, learn, _ = _render(conv, tok)
    logp = alone - np.log(np.exp(alone - alone.max(-1, keepdims=True)).sum(-1,
                                                                             keepdims=True)) \
        - alone.max(-1, keepdims=True)
    for t in range(len(full_ids) - 1):
      if learn[t + 1]:
        total -= logp[t, full_ids[t + 1]]
        count += 1
  assert count == int(mask.sum())
  assert packed_loss == pytest.approx(total / count, abs=1e-5)


def _render(record, tok):
  turns = sft.parse_conversation(record, "test")
  return sft.render(turns, tok, 1000, template="phi3")


def test_epochs_set_the_steps_from_one_pass_and_evaluate_each_epoch(tmp_path, tok):
  from phijax import train
  from phijax.configs import tiny
  # Ten records each longer than half a row: packing puts one per row, so an epoch is
  # ten rows whatever the packer does.
  records = [{"prompt": f"task {i}", "response": " ".join(["x = 1"] * 12)}
             for i in range(10)]
  (tmp_path / "set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  config = tiny.get_config("runlocal")
  config.data.seq_len = 64
  config.data.heldout_fraction = 0.0
  config.data.sources = {"sft": data.config.source("sft", str(tmp_path / "set.jsonl"))}
  assert 32 < len(sft.render(sft.parse_conversation(records[0], "r"), tok, 1000)[0]) <= 65
  config.train.update(epochs=3, batch_size=4, steps=1000, eval_every=7)
  note = train.apply_epochs(config, tok)
  assert (config.train.steps, config.train.eval_every, config.train.tokens) == (9, 3, 0)
  assert note == "3 epochs of 10 rows (3 steps of 4): 9 steps, evaluated every epoch"
  config.train.epochs = 0
  assert train.apply_epochs(config, tok) is None and config.train.steps == 9
