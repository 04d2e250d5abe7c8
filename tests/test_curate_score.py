"""Quality scores (phi-1's filter): the rubric annotator, a model annotator, mean-pooled
embeddings, the classifier, the cached scores file, and the data config's filter.

Oracles: the planted corpus's own labels (documents written good or bad on purpose);
a plain ``Transformer.apply`` of each document for the embeddings and the annotator's
log-odds; the scores file read back with ``json`` and ranked with ``sorted`` for the
filter's choice of documents.
"""

import json
import random
import string

import jax
import numpy as np
import pytest

from phijax import config_files
from phijax.curate import annotate, forward, score_command
from phijax.data import DataError, pipeline, sources
from phijax.data.quality import filters, rubric, scores
from phijax.data.tokenizer import train_tokenizer
from phijax.model import params_io
from phijax.model import transformer as model_lib
from phijax.model.config import ModelConfig
from tests.test_quality import iterator_resumes_exactly

CFG = ModelConfig(arch="phi", vocab_size=320, hidden_size=32, num_layers=2, num_heads=4,
                  intermediate_size=64, max_position_embeddings=256,
                  partial_rotary_factor=0.5)
GOOD, BAD = 60, 60


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
  monkeypatch.setattr(filters, "CACHE_DIR", str(tmp_path / "quality-cache"))
  monkeypatch.setattr(filters, "_MEMO", {})


def _words(rng, k):
  return [rng.choice(["count", "value", "total", "item", "name", "size", "score", "word",
                      "line", "path", "node", "step"]) + "_" + "".join(
                          rng.choices(string.ascii_lowercase, k=3)) for _ in range(k)]


def _good(rng) -> str:
  """A small documented module: a docstring, documented functions with doctests,
  comments giving reasons, short bodies (every rubric point)."""
  parts = [f'"""Helpers for {" ".join(_words(rng, 3))}: small functions, each with an '
           'example."""\n']
  for name in _words(rng, 3):
    k = rng.randint(2, 9)
    parts.append(f'\n\ndef {name}(x):\n    """Return {name} of x, scaled by {k}.\n\n'
                 f'    >>> {name}(2)\n    {2 * k}\n    """\n'
                 f'    # scaling keeps the units of x: the caller compares them\n'
                 f'    return x * {k}\n')
  return "".join(parts)


def _bad(rng) -> str:
  """Generated-looking code: hex tables in long lines, one long undocumented function."""
  table = ",".join(f"0x{rng.randrange(256):02x}" for _ in range(40))
  body = "".join(f"    v{j}=a*{rng.randrange(99)}+b-{rng.randrange(99)}\n" for j in range(45))
  return (f"T=({table},\n{table},\n{table})\n"
          f"def f{rng.randrange(999)}(a,b):\n{body}    return v0\n")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
  """``(root, labels by key, params_dir)``: GOOD + BAD planted files and an embedding
  model (randomly initialised; its tokenizer trained on the corpus)."""
  root = tmp_path_factory.mktemp("planted")
  rng = random.Random(0)
  docs = {f"good{k:03d}.py": _good(rng) for k in range(GOOD)}
  docs.update({f"bad{k:03d}.py": _bad(rng) for k in range(BAD)})
  for key, text in docs.items():
    (root / "corpus" / key).parent.mkdir(parents=True, exist_ok=True)
    (root / "corpus" / key).write_text(text, encoding="utf-8")
  params = model_lib.init_params(CFG, jax.random.PRNGKey(0))
  params_io.save_params(str(root / "model"), CFG, jax.tree_util.tree_map(np.asarray,
                                                                         params))
  train_tokenizer(list(docs.values()), vocab_size=320).save(root / "model" /
                                                            "tokenizer.model")
  return root / "corpus", {k: int(k.startswith("good")) for k in docs}, root / "model"


def _config(root, *overrides):
  return config_files.load("configs/text.py:runlocal", [
      f"--config.data.sources.text.path={root}", *overrides])


def _score(capsys, root, model, *flags):
  try:
    score_command.run(["--config=configs/text.py:runlocal",
                       f"--config.data.sources.text.path={root}", f"--params_dir={model}",
                       "--sample=100", "--batch_size=16", "--max_tokens=128", *flags])
    code = 0
  except SystemExit as e:
    code = e.code
  out, err = capsys.readouterr()
  return code, out, err


def test_the_rubric_labels_the_planted_documents(planted):
  root, labels, _ = planted
  for key, want in labels.items():
    text = (root / key).read_text()
    assert rubric.label(text) == want, (key, rubric.points(rubric.features(text)))
  assert rubric.score(_good(random.Random(5))) == 6 and rubric.score("x = 1\n") <= 2


def test_embeddings_are_the_mean_of_the_final_hidden_states(planted):
  _, _, model = planted
  cfg, params = params_io.load_params(str(model))
  rows = [[5, 9, 200, 3, 7], [11] * 40, [1, 2, 3]]
  got = forward.Forward(cfg, params).embed(rows, max_tokens=32, batch_size=2)
  m = model_lib.Transformer(cfg)
  for r, g in zip(rows, got):
    x, _, _ = m.apply({"params": params}, np.asarray([r[:32]]), head_inputs=True)
    np.testing.assert_allclose(g, np.asarray(x[0]).mean(0), rtol=1e-5, atol=1e-5)


def test_model_annotator_margin_is_the_yes_no_log_odds(planted):
  from phijax.evals import model_source
  root, _, model = planted
  loaded = model_source.load_params_dir(str(model))
  texts = [(root / k).read_text() for k in ("good000.py", "bad000.py", "good001.py")]
  got = annotate.model_margins(loaded, texts, max_tokens=200, batch_size=2)
  tok, m = loaded.tokenizer, model_lib.Transformer(loaded.cfg)
  yes, no = tok.encode(annotate.QUESTION + " yes"), tok.encode(annotate.QUESTION + " no")
  c = next(i for i, (a, b) in enumerate(zip(yes, no)) if a != b)
  for text, g in zip(texts, got):
    ids = tok.encode(text)[:200 - c] + yes[:c]
    logits = np.asarray(m.apply({"params": loaded.params}, np.asarray([ids])))[0, -1]
    logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    assert g == pytest.approx(logp[yes[c]] - logp[no[c]], abs=1e-4)
  assert annotate.top_share(np.asarray([0.1, 3.0, -1.0, 3.0]), 0.5).tolist() == [0, 1, 0, 1]


def test_pipeline_end_to_end_cached_and_reused(planted, capsys, tmp_path, monkeypatch):
  root, labels, model = planted
  out = tmp_path / "scores.json"
  code, text, err = _score(capsys, root, model, f"--out={out}")
  assert code == 0, err
  assert "embed text: 120/120 documents" in err  # progress
  doc = json.loads(out.read_text())
  r = doc["report"]
  assert r["labelled"] == 100 and r["heldout"] == 25
  assert 0.4 <= r["majority"] <= 0.6
  assert r["forest_accuracy"] >= 0.9 and r["logistic_accuracy"] >= 0.9, r
  # Every document scored; the planted good ones score above the bad ones.
  p = dict(zip(doc["keys"], doc["scores"]))
  assert set(p) == set(labels)
  assert np.mean([p[k] > 0.5 for k in labels if labels[k]]) >= 0.9
  assert np.mean([p[k] < 0.5 for k in labels if not labels[k]]) >= 0.9
  assert "held-out accuracy (25 labelled documents): forest" in text
  assert f"quality_scores={out}" in text

  # A rerun reads the cache; another classifier reuses the cached embeddings.
  monkeypatch.setattr(forward.Forward, "embed", lambda *a, **k: pytest.fail("embedded"))
  code, text, err = _score(capsys, root, model, f"--out={tmp_path / 'again.json'}")
  assert code == 0 and "from the cache" in text, err
  assert json.loads((tmp_path / "again.json").read_text()) == doc
  code, text, err = _score(capsys, root, model, "--classifier=logistic")
  assert code == 0 and "(cached)" in text and "computed in" in text, err

  # Labels from a file: the sample is the file's documents.
  lab = tmp_path / "labels.jsonl"
  chosen = sorted(labels)[::3]
  lab.write_text("".join(json.dumps({"key": k, "label": labels[k]}) + "\n" for k in chosen))
  code, text, err = _score(capsys, root, model, f"--annotator=labels:{lab}",
                           f"--out={tmp_path / 'lab.json'}")
  assert code == 0, err
  sample = json.loads((tmp_path / "lab.json").read_text())["report"]["sample"]
  assert [(s["key"], s["label"]) for s in sample] == [(k, labels[k]) for k in chosen]


def test_the_filter_keeps_exactly_the_top_fraction(planted, tmp_path):
  root, labels, _ = planted
  keys = sorted(labels)
  rng = np.random.default_rng(3)
  vals = rng.random(len(keys)).round(2)  # rounded: ties, broken by key order
  path = tmp_path / "scores.json"
  scores.write(str(path), dict(keys=keys, scores=vals.tolist()))
  plain = sources.build_source("text", _config(root).data.sources.text, 0.05)
  train = [plain.key(i) for i in plain.train_indices()]
  by_score = sorted(train, key=lambda k: (-vals[keys.index(k)], k))

  def kept(**fields):
    c = _config(root, *[f"--config.data.sources.text.{k}={v}" for k, v in fields.items()])
    src = pipeline.build_sources(c.data)["text"]
    assert list(src.heldout_indices()) == list(plain.heldout_indices())
    return {src.key(i) for i in src.train_indices()}

  assert kept(quality_scores=path, quality_keep=0.3) == set(
      by_score[:int(np.floor(0.3 * len(train) + 0.5))])
  assert kept(quality_scores=path, quality_min=0.6) == {
      k for k in train if vals[keys.index(k)] >= 0.6}
  # By bytes: the best documents whose total is nearest 30% of the training bytes.
  sizes = np.cumsum([len((root / k).read_bytes()) for k in by_score])
  n = int(np.argmin(abs(sizes - 0.3 * sizes[-1]))) + 1
  assert kept(quality_scores=path, quality_keep=0.3, quality_keep_by="bytes") == set(
      by_score[:n])
  a = kept(quality_scores="random:1", quality_keep=0.5)
  assert len(a) == round(len(train) / 2) and a == kept(quality_scores="random:1",
                                                       quality_keep=0.5)
  assert a != kept(quality_scores="random:2", quality_keep=0.5)


def test_filtered_iterator_resumes_exactly(planted, tmp_path):
  from phijax.data import fingerprint
  root, labels, model = planted
  path = tmp_path / "scores.json"
  keys = sorted(labels)
  scores.write(str(path), dict(keys=keys, scores=[float(labels[k]) for k in keys]))
  c = _config(root, f"--config.data.sources.text.quality_scores={path}",
              "--config.data.sources.text.quality_keep=0.5", "--config.data.seq_len=32",
              f"--config.data.tokenizer.path={model / 'tokenizer.model'}")
  assert "quality" in json.dumps(fingerprint.corpus_key(c.data, ["text"])[1])
  iterator_resumes_exactly(c.data)


@pytest.mark.parametrize("fields, message", [
    (dict(quality_keep=0.5), "quality_keep needs config.data.sources.text.quality_scores"),
    (dict(quality_scores="random:1"), "neither quality_keep"),
    (dict(quality_scores="random:1", quality_keep=0.5, quality_min=0.1), "not both"),
    (dict(quality_scores="random:x", quality_keep=0.5), "takes an integer seed"),
    (dict(quality_scores="random:1", quality_keep=0.5, quality_keep_by="tokens"),
     "quality_keep_by must be one of"),
    (dict(quality_scores="/nonexistent.json", quality_keep=0.5), "no scores file"),
    (dict(quality_scores="OTHER", quality_keep=0.5), "no score for"),
])
def test_bad_filter_settings_name_the_field(planted, tmp_path, fields, message):
  root, _, _ = planted
  if fields.get("quality_scores") == "OTHER":
    fields["quality_scores"] = tmp_path / "other.json"
    scores.write(str(fields["quality_scores"]), dict(keys=["a.py"], scores=[0.5]))
  c = _config(root, *[f"--config.data.sources.text.{k}={v}" for k, v in fields.items()])
  with pytest.raises(DataError, match=message):
    pipeline.build_sources(c.data)


@pytest.mark.parametrize("flags, message", [
    (["--annotator=gpt4"], "use rubric, labels:FILE.jsonl"),
    (["--annotator=labels:/nonexistent.jsonl"], "no labels file"),
    (["--label_share=1.5"], "--label_share must be in"),
    (["--source=nope"], "has no such source"),
    (["--annotator=labels:LAB"], "is no document of the source"),
])
def test_command_bad_input_is_one_line(planted, capsys, tmp_path, flags, message):
  root, _, model = planted
  lab = tmp_path / "lab.jsonl"
  lab.write_text('{"key": "missing.py", "label": 1}\n')
  code, _, err = _score(capsys, root, model, *[f.replace("LAB", str(lab)) for f in flags])
  assert code == 2 and message in err and "Traceback" not in err, err
