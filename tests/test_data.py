"""Data pipeline: exact tokenizer round trip, packing, resume, host shards, mixtures,
SFT masks, bad input. Oracles are the input text itself, sentencepiece-independent
counts (hashlib, UTF-8 lengths, Counter) and hand-written expectations."""

import collections
import copy
import hashlib
import json
import pathlib
import pickle

import grain
import numpy as np
import pytest

from phijax import data
from phijax.data import packing
from phijax.model.attention import attention_mask
from phijax.data import corpus
from phijax.data.mixture import choose_source

SEQ = 32


def _corpus_texts(n=14, seed=0):
  """Code-like documents of very different lengths, with the whitespace and
  characters that break naive tokenizers."""
  rng = np.random.default_rng(seed)
  extras = ["\tindented_with_tab = 1\n", "trailing = 2   \n", "s = 'é漢字🙂'\n",
            "windows = 3\r\n", "meta = '\u2581x\u2581'\n", "\n\n\n", "  two_spaces()\n"]
  texts = []
  for i in range(n):
    lines = [f"# file {i}\n"]
    for j in range(int(rng.integers(1, 40))):
      lines.append(f"def f_{i}_{j}(x):\n    return x * {j} + {i}\n")
      if rng.random() < 0.3:
        lines.append(extras[int(rng.integers(len(extras)))])
    texts.append("".join(lines))
  return texts


def _write_dir(path, texts, ext=".py"):
  path.mkdir(parents=True, exist_ok=True)
  for i, t in enumerate(texts):
    (path / f"doc_{i:02d}{ext}").write_bytes(t.encode("utf-8"))
  return path


@pytest.fixture(scope="module")
def texts():
  return _corpus_texts()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory, texts):
  return _write_dir(tmp_path_factory.mktemp("corpus"), texts)


@pytest.fixture(scope="module")
def tok(texts):
  return data.train_tokenizer(texts, vocab_size=400)


def _cfg(path, *, kind="text", heldout=0.0, workers=0, seq_len=SEQ, shuffle_rows=0,
         shuffle="documents", **src):
  # Documents shuffled, rows in stream order by default here: these tests read
  # documents back from the packed stream's order. The row shuffles (corpus-wide, the
  # default, and in windows) have their own tests below.
  c = data.config.defaults()
  c.seq_len = seq_len
  c.workers = workers
  c.shuffle = shuffle
  c.shuffle_rows = shuffle_rows
  c.heldout_fraction = heldout
  c.sources = {"main": data.config.source(kind, str(path), **src)}
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def _flatten(batches, key):
  return np.concatenate([b[key].reshape(-1) for b in batches])


def _epoch_rows(tok, texts):
  """Rows needed to cover one epoch of `texts` (one row more for the boundary)."""
  n_tokens = sum(len(tok.encode(t)) for t in texts)
  return n_tokens, n_tokens // SEQ + 1


def _documents_from_stream(tok, batches, n_tokens):
  """Document token lists from the first `n_tokens` positions of the row stream:
  a document's last input is the one whose target is <|endoftext|>."""
  inputs, targets = _flatten(batches, "inputs")[:n_tokens], _flatten(batches, "targets")[:n_tokens]
  ends = np.flatnonzero(targets == tok.eos_id)
  assert len(ends) and ends[-1] == n_tokens - 1, "an epoch must end with a document end"
  return [inputs[a:b + 1].tolist() for a, b in zip(np.r_[0, ends[:-1] + 1], ends)]


# ----------------------------------------------------------------------- config


def test_config_defaults_are_overridable_types():
  c = data.config.defaults()
  assert (c.seq_len, c.workers) == (256, 0)
  assert (c.tokenizer.path, c.tokenizer.vocab_size) == ("", 8192)
  assert isinstance(c.tokenizer.cache_dir, str) and c.tokenizer.cache_dir
  assert list(c.sources) == ["stdlib"]
  s = c.sources.stdlib
  assert (s.kind, s.path, s.text_field, s.weight) == ("stdlib", "", "text", 1.0)
  for leaf in [c.seq_len, c.workers, c.heldout_fraction, *c.tokenizer.values(),
               *s.values()]:
    assert isinstance(leaf, (str, int, float, bool)), leaf
  with pytest.raises(TypeError):
    c.seq_len = "long"  # type-locked, as the command line relies on
  with pytest.raises(ValueError, match="unknown data source kind 'csv'"):
    data.config.source("csv")


def test_every_kind_is_registered_once_and_listed_in_one_order():
  """One registry (phijax.data.kinds): the kinds read from files, which
  ``config.source`` takes, then the generated ones; errors list them in that order."""
  from phijax.data import kinds, sources
  assert sources.kind_names(generated=False) == (
      "stdlib", "auto", "text", "jsonl", "sft", "preferences", "chosen", "array_record")
  assert sources.kind_names(generated=True) == ("arithmetic",)
  for kind in sources.kind_names(generated=False):
    assert data.config.source(kind).kind == kind
  with pytest.raises(ValueError, match="'text' is registered twice"):
    kinds.register("text", files=lambda name, scfg: None)(lambda *a: None)


# -------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("text", [
    "", " ", "   leading spaces", "trailing   ", "a  b\t\tc", "\n\n\n", "x\r\ny\r\n",
    "é漢字🙂 \U0001f600", "a\x00b", "literal \u2581 meta \u2581\u2581", "<|endoftext|>",
    "def f():\n\treturn 1\n", " \n \n"])
def test_roundtrip_is_exact_and_bytes_add_up(tok, text):
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert int(tok.token_bytes[ids].sum()) == len(text.encode("utf-8"))


def test_special_tokens(tok):
  ids = {tok.pad_id, tok.eos_id, tok.eot_id}
  assert len(ids) == 3 and max(ids) < 4  # fixed layout: pad 0, unk 1, eos 2, eot 3
  assert tok.id_to_piece(tok.eos_id) == "<|endoftext|>"
  assert tok.id_to_piece(tok.eot_id) == "<|endofturn|>"
  # Control tokens: never produced from text (a file containing the literal string
  # is not cut in two), and they decode to nothing.
  assert tok.eos_id not in tok.encode("a <|endoftext|> b <|endofturn|>")
  assert tok.decode(tok.encode("x") + [tok.eos_id] + tok.encode("y")) == "xy"
  assert tok.token_bytes[[tok.pad_id, tok.eos_id, tok.eot_id]].tolist() == [0, 0, 0]


def test_token_bytes_table(tok):
  pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
  for i, p in enumerate(pieces):
    if p.startswith("<0x") and p.endswith(">") and len(p) == 6:
      expected = 1  # one byte of byte fallback
    elif p in ("<pad>", "<unk>", "<|endoftext|>", "<|endofturn|>",
               "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
      expected = 0
    else:
      expected = len(p.replace("\u2581", " ").encode("utf-8"))
    assert tok.token_bytes[i] == expected, p
  assert sum(p.startswith("<0x") for p in pieces) == 256


def test_tokenizer_save_load_pickle(tok, tmp_path):
  tok.save(tmp_path / "t.model")
  c = data.config.defaults()
  c.tokenizer.path = str(tmp_path / "t.model")
  loaded = data.load_tokenizer(c)
  clone = pickle.loads(pickle.dumps(tok))
  text = "def g(y):\n    return y  # é\n"
  assert loaded.encode(text) == tok.encode(text) == clone.encode(text)
  c.tokenizer.vocab_size = 300
  with pytest.raises(data.DataError, match="vocab_size is 300"):
    data.load_tokenizer(c)
  c.tokenizer.path = str(tmp_path / "missing.model")
  with pytest.raises(data.DataError, match="does not exist"):
    data.load_tokenizer(c)
  (tmp_path / "junk.model").write_bytes(b"not a model")
  c.tokenizer.path = str(tmp_path / "junk.model")
  with pytest.raises(data.DataError, match="not a sentencepiece model"):
    data.load_tokenizer(c)


# ------------------------------------------------------------ built-in corpus


@pytest.fixture(scope="module")
def stdlib_cfg(tmp_path_factory):
  c = data.config.defaults()
  c.tokenizer.cache_dir = str(tmp_path_factory.mktemp("cache"))
  c.seq_len = 64
  return c


@pytest.fixture(scope="module")
def stdlib_tok(stdlib_cfg):
  return data.load_tokenizer(stdlib_cfg)  # trains the default 8k BPE (seconds)


def test_stdlib_corpus_files_and_split(stdlib_cfg):
  root = corpus.stdlib_root()
  files = corpus.stdlib_files()
  assert len(files) > 300
  names = {f.as_posix() for f in files}
  assert "os.py" in names and "json/decoder.py" in names
  assert not any(set(f.parts) & {"test", "tests", "idle_test", "site-packages"}
                 for f in files)
  # Generated files are out (their headers say so); hand-written neighbours stay.
  every = {f.as_posix() for f in corpus.stdlib_files(skip_generated=False)}
  generated = every - names
  assert {"pydoc_data/topics.py", "encodings/cp437.py", "token.py"} <= generated
  assert {"encodings/utf_8.py", "encodings/idna.py", "_compat_pickle.py"} <= names
  for name in generated:  # their headers say so, or they are codec tables
    text = (root / name).read_text("utf-8")
    head = "".join(text.splitlines(True)[:5]).lower()
    assert ("generated" in head or "do not edit" in head
            or name.startswith("encodings/") and "decoding_table = (" in text), name
  src = data.build_sources(stdlib_cfg)["stdlib"]
  # Oracle for the split: sha256 of the relative path, independently computed.
  frac = stdlib_cfg.heldout_fraction
  expect = {k for k in names
            if int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") / 2**64 < frac}
  heldout = {src.keys[i] for i in src.heldout_indices()}
  empty = {pathlib.Path(p).relative_to(root).as_posix() for p in src.skipped["empty"]}
  assert heldout == expect - empty and heldout
  assert set(src.keys) == names - empty


def test_stdlib_roundtrip_every_file(stdlib_tok):
  root = corpus.stdlib_root()
  docs = [(str(f), (root / f).read_bytes().decode("utf-8")) for f in corpus.stdlib_files()]
  report = data.check_roundtrip(stdlib_tok, docs)
  assert report["documents"] == len(docs)
  assert report["failed"] == [] and report["byte_count_mismatch"] == []
  assert report["bytes"] == sum(len(t.encode("utf-8")) for _, t in docs)
  # REFERENCES: ~3.4 bytes/token for an 8k BPE on the stdlib; ours keeps newlines
  # inside pieces and does better.
  assert 3.3 < report["bytes_per_token"] < 4.5, report["bytes_per_token"]


def test_stdlib_tokenizer_is_cached(stdlib_cfg, stdlib_tok):
  cached = list((pathlib.Path(stdlib_cfg.tokenizer.cache_dir) / "tokenizers").glob("*.model"))
  assert [str(p) for p in cached] == [stdlib_tok.name]
  again = data.load_tokenizer(stdlib_cfg)
  assert again.model_proto == stdlib_tok.model_proto and again.name == stdlib_tok.name
  assert stdlib_tok.vocab_size == 8192


def test_no_cache_dir_trains_and_writes_nothing(stdlib_cfg, stdlib_tok, tmp_path,
                                                monkeypatch):
  """cache_dir "" (a from-nothing timing): the same tokenizer, trained again, and no
  file written anywhere (once it cached in ./tokenizers)."""
  monkeypatch.chdir(tmp_path)
  cfg = copy.deepcopy(stdlib_cfg)
  cfg.tokenizer.cache_dir = ""
  tok = data.load_tokenizer(cfg)
  assert tok.model_proto == stdlib_tok.model_proto
  assert list(tmp_path.iterdir()) == []
  from phijax.data import pipeline
  assert pipeline.token_cache_path(cfg, "stdlib", tok, [0, 1]) is None


def test_stdlib_default_pipeline(stdlib_cfg, stdlib_tok):
  it = data.make_train_iterator(stdlib_cfg, stdlib_tok, batch_size=4, seed=0,
                                process_index=0, process_count=1)
  batch = next(it)
  assert set(batch) == {"inputs", "targets", "segment_ids", "positions", "loss_mask"}
  for k, v in batch.items():
    assert v.shape == (4, 64) and v.dtype == (np.float32 if k == "loss_mask" else np.int32)
  assert batch["loss_mask"].min() == 1.0  # concat-then-split rows have no padding
  evals = data.make_eval_batches(stdlib_cfg, stdlib_tok, batch_size=4, num_batches=2,
                                 process_index=0, process_count=1)
  held = data.heldout_documents(stdlib_cfg)
  # The first eval row is the start of the first held-out document.
  first = stdlib_tok.encode(held[0])[:64]
  assert evals[0]["inputs"][0, :len(first)].tolist() == first


# ------------------------------------------------------------------- packing


def test_packing_every_token_once_no_cross_document_attention(tok, texts, corpus_dir):
  cfg = _cfg(corpus_dir)
  n_tokens, n_rows = _epoch_rows(tok, texts)
  B = 4
  it = data.make_train_iterator(cfg, tok, batch_size=B, seed=3, process_index=0,
                                process_count=1)
  batches = _take(it, n_rows // B + 1)
  # Every token of the corpus exactly once in the epoch (inputs = the documents'
  # tokens; each document's eos is a target only).
  stream = _flatten(batches, "inputs")[:n_tokens]
  expected = collections.Counter(t for text in texts for t in tok.encode(text))
  assert collections.Counter(stream.tolist()) == expected
  docs = _documents_from_stream(tok, batches, n_tokens)
  assert sorted(tok.decode(d) for d in docs) == sorted(texts)
  assert [tok.decode(d) for d in docs] != texts  # shuffled

  # doc_id of every position of the stream, from the documents found above.
  doc_id = np.concatenate([np.full(len(d), k) for k, d in enumerate(docs)])
  rows = np.concatenate([b["segment_ids"] for b in batches])
  positions = np.concatenate([b["positions"] for b in batches])
  targets = _flatten(batches, "targets")
  inputs = _flatten(batches, "inputs")
  # targets: the next token of the same document (eos after its last token).
  for k, d in enumerate(docs):
    start = sum(len(x) for x in docs[:k])
    assert targets[start:start + len(d)].tolist() == d[1:] + [tok.eos_id]
    assert inputs[start:start + len(d)].tolist() == d
  for r in range(n_tokens // SEQ):
    seg = rows[r]
    ids = doc_id[r * SEQ:(r + 1) * SEQ]
    mask = np.asarray(attention_mask(SEQ, SEQ, causal=True, q_segment_ids=seg[None],
                                      kv_segment_ids=seg[None]))[0]
    same_doc = ids[:, None] == ids[None, :]
    causal = np.tril(np.ones((SEQ, SEQ), bool))
    assert not (mask & ~same_doc).any(), f"row {r} attends across documents"
    assert (mask == (same_doc & causal)).all()
    # positions restart at 0 at each document (piece) start in the row
    starts = np.r_[0, np.flatnonzero(np.diff(ids)) + 1]
    expect_pos = np.arange(SEQ) - starts[np.searchsorted(starts, np.arange(SEQ), "right") - 1]
    assert positions[r].tolist() == expect_pos.tolist()
  assert data.packing_efficiency(batches) == 1.0


def test_epochs_reshuffle_and_stages_differ(tok, texts, corpus_dir):
  cfg = _cfg(corpus_dir)
  n_tokens, n_rows = _epoch_rows(tok, texts)
  kw = dict(batch_size=1, process_index=0, process_count=1)
  rows = _take(data.make_train_iterator(cfg, tok, seed=0, **kw), 2 * n_rows + 1)
  two_epochs = _documents_from_stream(tok, rows, 2 * n_tokens)
  first, second = two_epochs[:len(texts)], two_epochs[len(texts):]
  assert sorted(map(tok.decode, second)) == sorted(texts)
  assert first != second
  stage1 = _take(data.make_train_iterator(cfg, tok, seed=0, stage=1, **kw), n_rows)
  assert _documents_from_stream(tok, stage1, n_tokens) != first


def test_row_shuffle_permutes_rows_within_windows(tok, corpus_dir):
  kw = dict(batch_size=2, seed=5, process_index=0, process_count=1)
  window = 4
  plain = _take(data.make_train_iterator(_cfg(corpus_dir), tok, **kw), 6)
  mixed = _take(data.make_train_iterator(_cfg(corpus_dir, shuffle_rows=window), tok, **kw), 6)

  def rows(batches):
    return [tuple(r) for b in batches for r in b["inputs"]]

  p, m = rows(plain), rows(mixed)
  for w in range(0, len(p), window):  # the same rows in every window, reordered
    assert sorted(p[w:w + window]) == sorted(m[w:w + window])
  assert p != m
  for b in mixed:  # each row keeps its own targets, positions and segments
    for i, r in enumerate(b["inputs"]):
      j = p.index(tuple(r))
      src = plain[j // 2]
      np.testing.assert_array_equal(b["targets"][i], src["targets"][j % 2])
      np.testing.assert_array_equal(b["positions"][i], src["positions"][j % 2])


def test_global_shuffle_reads_every_row_of_one_packing_in_a_new_order_each_epoch(
    tok, texts, corpus_dir):
  """data.shuffle="global": an epoch is the rows of one concat-then-split packing
  (every token once, positions and segments as the streamed packing makes them), in a
  corpus-wide random order that differs from epoch to epoch."""
  cfg = _cfg(corpus_dir, shuffle="global")
  src = data.build_sources(cfg)["main"]
  seed = data.pipeline.stage_seed(3, 0, "main")
  packed = packing.PackedRows(src, src.train_indices(), tok, SEQ, order_seed=seed)
  n = len(packed)
  it = data.make_train_iterator(cfg, tok, batch_size=1, seed=3, process_index=0,
                                process_count=1)
  got = [next(it) for _ in range(2 * n)]
  want = [packed[r] for r in range(n)]
  key = lambda row: row["inputs"].tobytes() + row["positions"].tobytes()  # noqa: E731
  epochs = [[key({k: v[0] for k, v in b.items()}) for b in got[e * n:(e + 1) * n]]
            for e in (0, 1)]
  assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(map(key, want))
  assert epochs[0] != epochs[1] and epochs[0] != [key(r) for r in want]
  # The packing itself: every token once, targets the next token of the same document.
  expected = collections.Counter(t for text in texts for t in tok.encode(text))
  real = np.concatenate([r["inputs"][r["loss_mask"] > 0] for r in want])
  assert collections.Counter(real.tolist()) == expected
  docs = {tuple(tok.encode(t) + [tok.eos_id]) for t in texts}
  for r in want:
    for seg in np.unique(r["segment_ids"][r["segment_ids"] > 0]):
      at = r["segment_ids"] == seg
      assert r["positions"][at].tolist() == list(range(at.sum()))
      piece = r["inputs"][at].tolist() + [r["targets"][at][-1]]
      assert any(_contains(d, piece) for d in docs)
  assert data.packing_efficiency([{"segment_ids": r["segment_ids"]} for r in want]) > 0.99


def _contains(seq, piece) -> bool:
  n = len(piece)
  return any(list(seq[i:i + n]) == piece for i in range(len(seq) - n + 1))


def test_global_shuffle_sees_more_of_the_corpus_early(stdlib_cfg, stdlib_tok):
  """The default run's first 128 steps (16 rows of 256) read several times as many
  stdlib files with the corpus-wide shuffle as with documents streamed in order, and
  the count is the iterator's own: its first rows are the predicted ones."""
  cfg = copy.deepcopy(stdlib_cfg)
  cfg.seq_len = 256
  seen = {}
  for mode in ("documents", "global"):
    cfg.shuffle = mode
    seen[mode] = data.pipeline.documents_seen(cfg, stdlib_tok, seed=0, rows=128 * 16)["stdlib"]
  assert seen["global"] >= 3 * seen["documents"], seen
  src = data.build_sources(cfg)["stdlib"]
  packed = packing.PackedRows(src, src.train_indices(), stdlib_tok, 256,
                              order_seed=data.pipeline.stage_seed(0, 0, "stdlib"))
  it = data.make_train_iterator(cfg, stdlib_tok, batch_size=16, seed=0, process_index=0,
                                process_count=1)
  # Oracle for the order: grain's own shuffle of the row indices with the stage's seed.
  order = iter(grain.MapDataset.source(np.arange(len(packed))).shuffle(
      seed=data.pipeline.stage_seed(0, 0, "stdlib") % (1 << 31)))
  batch = next(it)
  for row in batch["inputs"]:
    np.testing.assert_array_equal(row, packed[next(order)]["inputs"])


def test_init_and_data_seeds_are_separate(tok, corpus_dir):
  """train.data_seed alone decides the batches: the same data seed with another init
  seed gives identical batches, another data seed different ones."""
  from ml_collections import ConfigDict

  from phijax.train.objectives import data_seed
  cfg = _cfg(corpus_dir, shuffle="global")

  def first_batches(seed, dseed):
    t = ConfigDict(dict(seed=seed, data_seed=dseed))
    it = data.make_train_iterator(cfg, tok, batch_size=2, seed=data_seed(t),
                                  process_index=0, process_count=1)
    return np.stack([next(it)["inputs"] for _ in range(3)])

  same = first_batches(0, 7)
  np.testing.assert_array_equal(same, first_batches(5, 7))
  assert not np.array_equal(same, first_batches(0, 8))
  np.testing.assert_array_equal(first_batches(4, None), first_batches(9, 4))


# -------------------------------------------------------------------- resume


# Grain's worker processes take seconds to start: tested once, with the default shuffle.
@pytest.mark.parametrize("workers,shuffle", [(0, "documents"), (0, "global"), (1, "global")])
def test_resume_is_exact(tok, corpus_dir, tmp_path, workers, shuffle):
  import grain
  from etils import epath
  cfg = _cfg(corpus_dir, workers=workers, shuffle_rows=3,  # windows end mid-batch
             shuffle=shuffle)
  kw = dict(batch_size=2, seed=1, process_index=0, process_count=1)
  handler = grain.checkpoint.CheckpointHandler()  # what orbax saves the iterator with
  it = data.make_train_iterator(cfg, tok, **kw)
  checks = []
  # Several points in the stream (0: before the first batch); with workers (each fresh
  # iterator starts processes) two.
  for k in ((0, 3) if workers else (0, 3, 4)):
    _take(it, k)
    ckpt = epath.Path(tmp_path / f"k{len(checks)}")
    ckpt.mkdir()
    handler.save(ckpt, item=it)
    checks.append((ckpt, _take(it, 4)))
  for ckpt, expected in checks:
    fresh = data.make_train_iterator(cfg, tok, **kw)
    handler.restore(ckpt, item=fresh)
    for got, want in zip(_take(fresh, 4), expected):
      assert set(got) == set(want)
      for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    if workers:
      fresh.close()
  if workers:
    it.close()


# --------------------------------------------------------------------- hosts


def test_two_hosts_disjoint_shards_cover_everything(tok, texts, corpus_dir):
  cfg = _cfg(corpus_dir)
  shards = []
  for host in (0, 1):
    src = data.build_sources(cfg)["main"]
    host_texts = [src.text(i) for i in src.train_indices()[host::2]]
    n_tokens, n_rows = _epoch_rows(tok, host_texts)
    it = data.make_train_iterator(cfg, tok, batch_size=1, seed=0, process_index=host,
                                  process_count=2)
    docs = _documents_from_stream(tok, _take(it, n_rows), n_tokens)
    shards.append(collections.Counter(tok.decode(d) for d in docs))
  assert not set(shards[0]) & set(shards[1])
  assert sorted((shards[0] + shards[1]).elements()) == sorted(texts)
  assert abs(sum(shards[0].values()) - sum(shards[1].values())) <= 1
  with pytest.raises(data.DataError, match="too few"):
    data.make_train_iterator(cfg, tok, batch_size=1, seed=0, process_index=len(texts),
                             process_count=len(texts) + 1)


# ------------------------------------------------------------------- mixtures


def test_choose_source_keeps_quotas():
  rng = np.random.default_rng(0)
  for _ in range(50):
    k = int(rng.integers(1, 6))
    w = rng.random(k) ** 2 + 0.01
    w = w / w.sum()
    counts = [0] * k
    for n in range(1, 500):
      counts[choose_source(counts, list(w))] += 1
      assert np.abs(np.asarray(counts) - n * w).max() < 1.0


def test_mixture_shares_are_exact_per_stage(tmp_path, tok):
  # Source "a" uses only the letters a-m, "b" only n-z: each row tells its source.
  rng = np.random.default_rng(1)
  def docs(letters, n, size):
    return ["".join(rng.choice(list(letters), size)) for _ in range(n)]
  _write_dir(tmp_path / "a", docs("abcdefghijklm", 5, 300))
  _write_dir(tmp_path / "b", docs("nopqrstuvwxyz", 30, 20))  # short documents
  cfg = data.config.defaults()
  cfg.seq_len, cfg.heldout_fraction = SEQ, 0.0
  cfg.shuffle_rows = 0  # the row shuffle keeps shares per window, not per prefix
  cfg.sources = {"a": data.config.source("text", str(tmp_path / "a"), weight=1.0),
                 "b": data.config.source("text", str(tmp_path / "b"), weight=3.0)}

  def row_sources(weights, n_batches):
    it = data.make_train_iterator(cfg, tok, batch_size=4, seed=0, weights=weights,
                                  process_index=0, process_count=1)
    out = []
    for b in _take(it, n_batches):
      for row in b["inputs"]:
        letters = set(tok.decode(row))
        assert letters <= set("abcdefghijklm") or letters <= set("nopqrstuvwxyz")
        out.append("a" if letters <= set("abcdefghijklm") else "b")
    return out

  for weights, share_a in [(None, 0.25), ({"a": 3, "b": 1}, 0.75), ({"a": 1.0}, 1.0)]:
    seq = row_sources(weights, 10)
    for n in range(1, len(seq) + 1):
      assert abs(seq[:n].count("a") - share_a * n) < 1.0, (weights, n)
  with pytest.raises(data.DataError, match="unknown data sources \\['c'\\]"):
    row_sources({"c": 1.0}, 1)
  with pytest.raises(data.DataError, match="all data source weights are 0"):
    row_sources({"a": 0.0, "b": 0.0}, 1)


# ------------------------------------------------------------------------ SFT


def test_sft_loss_only_on_responses(tmp_path, tok):
  records = [
      {"prompt": "what is x?", "response": "x = 1\n"},
      {"messages": [{"role": "system", "content": "be brief"},
                    {"role": "user", "content": "add"},
                    {"role": "assistant", "content": "a + b"},
                    {"role": "user", "content": "sub"},
                    {"role": "assistant", "content": "a - b"}]},
  ]
  (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
  cfg = _cfg(tmp_path / "chat.jsonl", kind="sft")
  batch = next(data.make_train_iterator(cfg, tok, batch_size=2, seed=0,
                                        process_index=0, process_count=1))
  E = tok.eot_id
  # Hand-built expectation: turn tokens + eot; target t is learned iff it belongs
  # to an assistant turn.
  expected = []
  for turns in ([("user", "what is x?"), ("assistant", "x = 1\n")],
                [("system", "be brief"), ("user", "add"), ("assistant", "a + b"),
                 ("user", "sub"), ("assistant", "a - b")]):
    ids, learn = [], []
    for role, text in turns:
      t = tok.encode(text) + [E]
      ids += t
      learn += [role == "assistant"] * len(t)
    expected.append((ids[:-1], ids[1:], learn[1:]))
  found = []
  for r in range(2):
    seg = batch["segment_ids"][r]
    for s in range(1, seg.max() + 1):
      where = seg == s
      got = (batch["inputs"][r][where].tolist(), batch["targets"][r][where].tolist(),
             (batch["loss_mask"][r][where] > 0).tolist())
      assert got in expected  # whole conversations: never split across rows
      assert batch["positions"][r][where].tolist() == list(range(where.sum()))
      found.append(expected.index(got))
    assert (batch["loss_mask"][r][seg == 0] == 0).all()
  assert sorted(set(found)) == [0, 1]

  cfg.sources.main.max_tokens = 6
  with pytest.warns(data.DataWarning, match="truncated to max_tokens=6"):
    b = next(data.make_train_iterator(cfg, tok, batch_size=1, seed=0,
                                      process_index=0, process_count=1))
  seg = b["segment_ids"][0]
  for s in range(1, seg.max() + 1):  # each conversation cut to its first 6 tokens
    got = b["inputs"][0][seg == s].tolist()
    assert got in [e[0][:5] for e in expected]
  cfg.sources.main.max_tokens = SEQ + 2
  with pytest.raises(data.DataError, match="does not fit a row"):
    next(data.make_train_iterator(cfg, tok, batch_size=1, seed=0, process_index=0,
                                  process_count=1))


def test_sft_bad_records(tmp_path, tok):
  for line, match in [('{"prompt": "p"}', "needs 'prompt' and 'response'"),
                      ('{"messages": [{"role": "robot", "content": "x"}]}',
                       "message 0 must be"),
                      ('{"messages": [{"role": "user", "content": "x"}]}',
                       "no assistant turn")]:
    (tmp_path / "c.jsonl").write_text('{"prompt": "a", "response": "b"}\n' + line + "\n")
    with pytest.raises(data.DataError, match=f"c.jsonl:2: .*{match}"):
      data.build_sources(_cfg(tmp_path / "c.jsonl", kind="sft"))


# ----------------------------------------------------------- other sources


def test_jsonl_and_array_record_sources(tmp_path, tok, texts):
  lines = [json.dumps({"body": t, "id": i}) for i, t in enumerate(texts)]
  (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n\n")
  data.write_array_record(tmp_path / "ar" / "docs.array_record",
                          [tok.encode(t) for t in texts])
  n_tokens, n_rows = _epoch_rows(tok, texts)
  for cfg in (_cfg(tmp_path / "docs.jsonl", kind="jsonl", text_field="body"),
              _cfg(tmp_path / "ar", kind="array_record")):
    it = data.make_train_iterator(cfg, tok, batch_size=1, seed=0, process_index=0,
                                  process_count=1)
    docs = _documents_from_stream(tok, _take(it, n_rows), n_tokens)
    assert sorted(tok.decode(d) for d in docs) == sorted(texts)
  data.write_array_record(tmp_path / "bad" / "x.array_record", [[1, 2, tok.vocab_size]])
  with pytest.raises(data.DataError, match="outside the tokenizer's vocabulary"):
    next(data.make_train_iterator(_cfg(tmp_path / "bad", kind="array_record"), tok,
                                  batch_size=1, seed=0, process_index=0, process_count=1))


# ------------------------------------------------------------------ bad input


def test_bad_input_messages(tmp_path, tok, texts):
  def build(path, **kw):
    return data.build_sources(_cfg(path, **kw))["main"]

  with pytest.raises(data.DataError, match="path '.*nowhere' does not exist.*sources.main.path"):
    build(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(data.DataError, match="directory '.*empty' has no files"):
    build(tmp_path / "empty")
  with pytest.raises(data.DataError, match="has no path"):
    build("")
  bad_kind = _cfg(tmp_path)
  bad_kind.sources.main.kind = "csv"
  with pytest.raises(data.DataError, match="unknown kind 'csv'"):
    data.build_sources(bad_kind)

  mixed = _write_dir(tmp_path / "mixed", texts[:3])
  (mixed / "latin1.txt").write_bytes("caf\xe9 = 1\n".encode("latin-1"))
  (mixed / "empty.py").write_bytes(b"")
  with pytest.warns(data.DataWarning, match="skipped 1 files that are not UTF-8.*latin1.txt"):
    src = build(mixed)
  assert src.num_documents == 3
  assert [pathlib.Path(p).name for p in src.skipped["not_utf8"]] == ["latin1.txt"]
  assert [pathlib.Path(p).name for p in src.skipped["empty"]] == ["empty.py"]
  (tmp_path / "only_binary").mkdir()
  (tmp_path / "only_binary" / "x.bin").write_bytes(b"\xff\xfe\x00")
  with pytest.warns(data.DataWarning), pytest.raises(data.DataError, match="none of its 1 files"):
    build(tmp_path / "only_binary")

  j = tmp_path / "d.jsonl"
  j.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
  with pytest.raises(data.DataError,
                     match=r"d.jsonl:2: no 'text' field \(the line has \['body'\]\); "
                           r"set config.data.sources.main.text_field"):
    build(j, kind="jsonl")
  j.write_text('{"text": "ok"}\n{"text": 3}\n')
  with pytest.raises(data.DataError, match="d.jsonl:2: field 'text' is int"):
    build(j, kind="jsonl")
  j.write_text('{"text": "ok"}\n{"text": "unterminated\n')
  with pytest.raises(data.DataError, match="d.jsonl:2: not valid JSON"):
    build(j, kind="jsonl")
  (tmp_path / "x.array_record").write_bytes(b"garbage")
  with pytest.raises(data.DataError, match="not an ArrayRecord file"):
    build(tmp_path / "x.array_record", kind="array_record")

  cfg = _cfg(tmp_path / "mixed")
  cfg.seq_len = 0
  with pytest.raises(data.DataError, match="seq_len must be >= 1"):
    data.make_train_iterator(cfg, tok, batch_size=1, seed=0, process_index=0,
                             process_count=1)


# ---------------------------------------------------------------------- eval


def test_eval_batches_cover_heldout_bytes(tok, texts, corpus_dir):
  cfg = _cfg(corpus_dir, heldout=0.3)
  held = data.heldout_documents(cfg)
  src = data.build_sources(cfg)["main"]
  assert held == [src.text(i) for i in src.heldout_indices()] and 0 < len(held) < len(texts)
  n_tokens = sum(len(tok.encode(t)) for t in held)
  n_batches = n_tokens // (2 * SEQ) + 2  # more than the held-out data fills
  kw = dict(batch_size=2, num_batches=n_batches, process_index=0, process_count=1)
  evals = data.make_eval_batches(cfg, tok, **kw)
  assert len(evals) == n_batches and all(b["inputs"].shape == (2, SEQ) for b in evals)
  assert (evals[-1]["loss_mask"] == 0).all()  # padding batch: every process runs n_batches
  # Bytes of all targets = UTF-8 bytes of the held-out text minus each document's
  # first token (it is never a target).
  first_bytes = sum(int(tok.token_bytes[tok.encode(t)[0]]) for t in held)
  assert sum(int(b["bytes"].sum()) for b in evals) == sum(
      len(t.encode("utf-8")) for t in held) - first_bytes
  for b in evals:
    np.testing.assert_array_equal(b["bytes"], tok.token_bytes[b["targets"]] * (b["loss_mask"] > 0))
  again = data.make_eval_batches(cfg, tok, **kw)
  assert all((a[k] == b[k]).all() for a, b in zip(evals, again) for k in a)
  with pytest.raises(data.DataError, match="no held-out documents"):
    data.make_eval_batches(_cfg(corpus_dir, heldout=0.0), tok, **kw)


def test_fixed_batch_repeats_the_first_batch_and_resumes(tok, corpus_dir, tmp_path):
  """data.fixed_batch (full-batch gradient descent): every batch is the first batch of
  the ordinary stream, and the iterator's state restores."""
  import grain
  from etils import epath
  kw = dict(batch_size=2, seed=3, process_index=0, process_count=1)
  plain = _take(data.make_train_iterator(_cfg(corpus_dir, shuffle_rows=4), tok, **kw), 2)
  cfg = _cfg(corpus_dir, shuffle_rows=4)
  cfg.fixed_batch = True
  it = data.make_train_iterator(cfg, tok, **kw)
  got = _take(it, 3)
  assert not np.array_equal(plain[0]["inputs"], plain[1]["inputs"])
  for b in got:
    assert set(b) == set(plain[0])
    for key in b:
      np.testing.assert_array_equal(b[key], plain[0][key], err_msg=key)
  got[0]["inputs"][:] = -1  # a batch is its own copy
  assert (next(it)["inputs"] == plain[0]["inputs"]).all()
  ckpt = epath.Path(tmp_path / "fixed")
  ckpt.mkdir()
  grain.checkpoint.CheckpointHandler().save(ckpt, item=it)
  fresh = data.make_train_iterator(cfg, tok, **kw)
  grain.checkpoint.CheckpointHandler().restore(ckpt, item=fresh)
  np.testing.assert_array_equal(next(fresh)["inputs"], plain[0]["inputs"])


def test_stdlib_glob_and_exclude_select_packages_and_keep_the_split():
  """``glob``/``exclude`` pick whole stdlib packages; the two sides partition the
  corpus, and each file keeps the held-out side it has in the full corpus."""
  from phijax.data import config as data_config, sources
  full = sources.build_source("s", data_config.source("stdlib"), 0.05)
  held = lambda src: {src.keys[i] for i in src.heldout_indices()}  # noqa: E731
  pkgs = "email/*,json/*"
  rest = sources.build_source("s", data_config.source("stdlib", exclude=pkgs), 0.05)
  only = sources.build_source("s", data_config.source("stdlib", glob=pkgs), 0.05)
  assert only.keys and all(k.startswith(("email/", "json/")) for k in only.keys)
  assert not any(k.startswith(("email/", "json/")) for k in rest.keys)
  assert sorted(rest.keys + only.keys) == sorted(full.keys)
  assert held(rest) | held(only) == held(full)


@pytest.mark.parametrize("field", ["glob", "exclude"])
def test_stdlib_pattern_that_matches_nothing_is_named(field):
  from phijax.data import config as data_config, sources
  from phijax.data.errors import DataError
  with pytest.raises(DataError, match=rf"sources\.s\.{field} pattern 'emial/\*' matches no"):
    sources.build_source("s", data_config.source("stdlib", **{field: "emial/*"}), 0.05)


def test_text_source_exclude(tmp_path):
  from phijax.data import config as data_config, sources
  for name in ("a.txt", "b.txt", "skip/c.txt"):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_text(f"document {name}\n")
  src = sources.build_source("t", data_config.source("text", str(tmp_path), exclude="skip/*"),
                             0.0)
  assert sorted(src.keys) == ["a.txt", "b.txt"]


def test_codec_tables_are_left_out_of_the_stdlib_corpus_with_or_without_a_header():
  """gencodec's tables say they were generated; cp858.py ("modified from cp850") and a
  few others do not, and are known by their decoding table. Code stays in."""
  from phijax.data import corpus
  root = corpus.stdlib_root()
  files = {f.as_posix() for f in corpus.stdlib_files(root)}
  for name in ("cp437", "cp858", "cp1125", "cp720", "koi8_t", "palmos"):
    assert (root / "encodings" / f"{name}.py").exists()
    assert f"encodings/{name}.py" not in files
  for kept in ("encodings/charmap.py", "encodings/rot_13.py", "encodings/utf_8.py",
               "json/decoder.py"):
    assert kept in files


def test_eval_rows_are_shared_among_sources_by_weight(tmp_path):
  """A limited evaluation reads each source's held-out rows in proportion to its
  weight (not the first source's rows alone); a source short of its share leaves the
  rest to the others; the quotas split by largest remainder."""
  from phijax.data.pipeline import _row_quotas
  assert _row_quotas(8, {"a": 1.0, "b": 3.0}) == {"a": 2, "b": 6}
  assert _row_quotas(5, {"a": 1.0, "b": 1.0, "c": 1.0}) == {"a": 2, "b": 2, "c": 1}
  assert _row_quotas(3, {"a": 0.0, "b": 0.0}) == {"a": 2, "b": 1}
  assert _row_quotas(None, {"a": 1.0}) == {"a": None}
  for name, docs, repeat in (("alpha", 40, 200), ("beta", 40, 200), ("gamma", 4, 5)):
    (tmp_path / name).mkdir()
    for i in range(docs):
      (tmp_path / name / f"{i}.txt").write_text(f"{name} {i} " * repeat)
  tok = data.train_tokenizer(["alpha beta gamma 0 1 2 3 4 5 6 7 8 9 " * 50], vocab_size=300)
  cfg = data.config.defaults()
  cfg.seq_len, cfg.heldout_fraction = 64, 0.5
  cfg.sources = {n: data.config.source("text", str(tmp_path / n), weight=w)
                 for n, w in (("alpha", 0.25), ("beta", 0.75), ("gamma", 0.0))}

  def source_of_rows(cfg, num_batches):
    batches = data.make_eval_batches(cfg, tok, batch_size=4, num_batches=num_batches,
                                     process_index=0, process_count=1)
    words = [next(w for w in ("alpha", "beta", "gamma") if w in tok.decode(r.tolist()))
             for b in batches for r in b["inputs"]]
    return {w: words.count(w) for w in set(words)}

  assert source_of_rows(cfg, 2) == {"alpha": 2, "beta": 6}  # gamma has weight 0
  cfg.sources.alpha.weight, cfg.sources.gamma.weight = 0.0, 0.75
  got = source_of_rows(cfg, 2)  # gamma's short held-out documents fill fewer than its 4
  assert 1 <= got["gamma"] < 4 and got["beta"] == 8 - got["gamma"] and "alpha" not in got
  # data.eval_sources: the target alone while training on a mix, weight 0 included.
  cfg.eval_sources = "alpha"
  assert source_of_rows(cfg, 2) == {"alpha": 8}
  assert [data.build_sources(cfg)["alpha"].text(i) for i in
          data.build_sources(cfg)["alpha"].heldout_indices()] == data.heldout_documents(cfg)
  cfg.eval_sources = "alpha,delta"
  with pytest.raises(data.DataError, match=r"eval_sources names \['delta'\]"):
    source_of_rows(cfg, 2)


def test_a_source_with_nothing_held_out_is_named(tmp_path, caplog):
  """A one-document source is trained on and never evaluated: the evaluation says so
  instead of measuring the other sources without a word."""
  (tmp_path / "many").mkdir()
  for i in range(20):
    (tmp_path / "many" / f"{i}.txt").write_text(f"many {i} " * 100)
  (tmp_path / "one.txt").write_text("one " * 500)
  tok = data.train_tokenizer(["many one 0 1 2 3 4 5 6 7 8 9 " * 50], vocab_size=300)
  cfg = data.config.defaults()
  cfg.seq_len, cfg.heldout_fraction = 64, 0.3
  cfg.sources = {"many": data.config.source("text", str(tmp_path / "many"), weight=0.5),
                 "one": data.config.source("text", str(tmp_path / "one.txt"), weight=0.5)}
  with caplog.at_level("WARNING"):
    data.make_eval_batches(cfg, tok, batch_size=2, num_batches=1, process_index=0,
                           process_count=1)
  assert "['one'] hold no held-out document" in caplog.text
  assert "measures ['many'] only" in caplog.text
