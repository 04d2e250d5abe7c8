"""Prepared corpora (``python -m phijax.data.prepare``): shards written in parts by two
processes (resumable), then read by a run: the same training and evaluation batches
as tokenizing on the fly, each of 3 hosts reading about a third of the documents; a
manifest of another tokenizer or another corpus, a missing or damaged shard, a rerun
over shards of another make: one line each. Oracle: the on-the-fly pipeline."""

import json
import os

import numpy as np
import pytest

from phijax import cli, config_files, data
from phijax.data import hosts, pipeline, prepare
from phijax.data.errors import DataError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  c = config_files.load("tiny:runlocal", [])
  tok = data.load_tokenizer(c.data)
  out = str(tmp_path_factory.mktemp("prep") / "stdlib")
  first = prepare.prepare(c.data, tok, out, shard_documents=100, process_count=2)
  assert first["written"] == 4 and first["manifest"] is None  # shards 0, 2, 4, 6 of 7
  args = cli.parse(prepare.parser, ["--config=tiny:runlocal", f"--out={out}",
                                    "--shard_documents=100", "--process_index=1",
                                    "--process_count=2"])
  prepare.main(args)  # the other process's shards, then the manifest
  again = prepare.prepare(c.data, tok, out, shard_documents=100, process_count=2)
  assert again["written"] == 0 and again["kept"] == 4 and again["manifest"]
  return c, tok, out


def _train(cfg_data, tok, rows=None):
  return iter(pipeline.make_train_dataset(cfg_data, tok, batch_size=6, seed=2,
                                          process_index=0, process_count=1, rows=rows))


def test_prepared_batches_equal_on_the_fly_and_hosts_read_their_share(prepared, monkeypatch):
  c, tok, out = prepared
  fly = _train(c.data, tok)
  want = [next(fly) for _ in range(6)]
  c.data.prepared = out
  reads = []
  original = prepare.PreparedTokens.tokens

  def counted(self, i):
    reads[-1].add(int(i))
    return original(self, i)
  monkeypatch.setattr(prepare.PreparedTokens, "tokens", counted)
  reads.append(set())
  whole = _train(c.data, tok)
  for w in want:
    got = next(whole)
    for k in w:
      np.testing.assert_array_equal(got[k], w[k])
  parts = []
  for i in range(3):
    reads.append(set())
    it = _train(c.data, tok, hosts.block_rows(6, 3, i))
    parts.append([next(it) for _ in range(6)])
  for b, w in enumerate(want):
    np.testing.assert_array_equal(np.concatenate([p[b]["inputs"] for p in parts]),
                                  w["inputs"])
  total, shares = len(reads[0]), [len(r) for r in reads[1:]]
  assert set().union(*reads[1:]) == reads[0]
  # A row's documents are read by its host only (a document split over two rows of
  # different hosts is read by both): about a third each.
  assert all(total / 3 * 0.6 <= s <= total / 3 * 1.5 for s in shares), (total, shares)
  ev = [pipeline.make_eval_batches(cfg, tok, batch_size=4, num_batches=3, process_index=0,
                                   process_count=1)
        for cfg in (config_files.load("tiny:runlocal", []).data, c.data)]
  for a, b in zip(*ev):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  c.data.prepared = ""


def _one_line(cfg_data, match):
  with pytest.raises(DataError, match=match) as e:
    pipeline.build_sources(cfg_data)["stdlib"].tokens(0, data.load_tokenizer(cfg_data))
  assert "\n" not in str(e.value)


def test_mismatched_or_damaged_shards_are_refused(prepared, tmp_path):
  c, tok, out = prepared
  import shutil
  bad = str(tmp_path / "bad")
  shutil.copytree(out, bad)
  c.data.prepared = bad
  manifest = json.loads(open(os.path.join(bad, "manifest.json")).read())

  def edit(**fields):
    m = json.loads(json.dumps(manifest))
    m["sources"]["stdlib"].update(fields)
    with open(os.path.join(bad, "manifest.json"), "w") as f:
      json.dump(m, f)
  edit(tokenizer_sha256="0" * 64)
  _one_line(c.data, "prepared with another tokenizer")
  edit(identity="0" * 64)
  _one_line(c.data, "not the corpus prepared")
  edit()
  shard = os.path.join(bad, "stdlib", "shard-00000.array_record")
  data_bytes = open(shard, "rb").read()
  with open(shard, "wb") as f:
    f.write(data_bytes[:len(data_bytes) // 2])
  _one_line(c.data, "damaged")
  os.remove(shard)
  _one_line(c.data, "shard .* is missing")
  c.data.prepared = str(tmp_path / "nowhere")
  _one_line(c.data, "no manifest.json there")
  c.data.prepared = ""
  # Preparing into a directory of other shards (here: another shard size) is refused
  # rather than keeping them.
  with pytest.raises(DataError, match="prepared with another shard_documents") as e:
    prepare.prepare(c.data, tok, out, shard_documents=50)
  assert "\n" not in str(e.value)
