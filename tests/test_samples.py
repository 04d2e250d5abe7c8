"""samples.txt's prompts come from train.sample_prompts: code prompts for a code
corpus, the first words of held-out documents for any other (a prose corpus gets
prose prompts), or the config's own."""

import jax
import numpy as np
from flax import linen as nn

from phijax import config_files, data
from phijax.model import abstract_params
from phijax.model.config import ModelConfig
from tests.test_own_corpus import _text_config
from phijax.train.pieces import samples

PROSE = ["The river ran cold that spring, and the mill stood still.\n",
         "Once upon a time there was a small village by the sea.\n",
         "Weather reports said  rain would come\tby evening.\n",
         "She wrote letters every week to her brother in the city.\n"] * 3


def _prose_config(tmp_path, texts):
  root = tmp_path / "corpus"
  root.mkdir()
  for i, t in enumerate(texts):
    (root / f"doc_{i:02d}.txt").write_text(t)
  return _text_config(root, tmp_path / "cache", "--config.data.heldout_fraction=0.5")


def test_prompts_from_the_config(tmp_path):
  code = config_files.load("tiny:runlocal")  # the stdlib: code prompts
  assert samples.sample_prompts(code, 4) == samples.CODE_PROMPTS[:4]
  code.train.sample_prompts = "Once upon a time||  The cat||"
  assert samples.sample_prompts(code, 4) == ("Once upon a time", "  The cat")
  assert samples.sample_prompts(code, 1) == ("Once upon a time",)
  # A prose corpus: the first three words of held-out documents, their spacing kept.
  prose = _prose_config(tmp_path, PROSE)
  held = data.heldout_documents(prose.data)
  prompts = samples.sample_prompts(prose, 3)
  assert len(prompts) == 3 and prompts[0] == " ".join(held[0].split()[:3]) + " "
  for p in prompts:
    assert p.endswith(" ") and any(h.startswith(p.rstrip(" ")) for h in held), p
    assert len(p.split()) == 3
  prose.train.sample_prompts = "code"
  assert samples.sample_prompts(prose, 2) == samples.CODE_PROMPTS[:2]


def test_samples_file_uses_the_prompts(tmp_path):
  prose = _prose_config(tmp_path, PROSE)
  tok = data.train_tokenizer(PROSE, vocab_size=300)
  cfg = ModelConfig(arch="phi", vocab_size=320, hidden_size=32, num_layers=1, num_heads=2,
                    intermediate_size=64, max_position_embeddings=64)
  rng = np.random.default_rng(0)  # random weights: the prompts, not the text, matter
  params = jax.tree.map(lambda s: (0.02 * rng.standard_normal(s.shape)).astype(s.dtype),
                        nn.unbox(abstract_params(cfg)))
  prompts = ("Once upon a time", *samples.sample_prompts(prose, 2))
  path = tmp_path / "samples.txt"
  samples.write_samples(str(path), cfg, params, tok, prompts, 6)
  text = path.read_text()
  assert text.count("=== prompt: ") == 3
  for p in prompts:
    assert f"=== prompt: {p!r}\n{p.rstrip(' ')}" in text

