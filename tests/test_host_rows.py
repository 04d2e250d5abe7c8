"""Each host reads only its share of the global batch (``phijax.data.hosts``).

The assignment for 64 and 256 processes (computed, no processes started) is disjoint,
covers the batch, is balanced within one row and keeps the 1-process order; per-host
iterators of 3 processes put together give the 1-process batches, each materialising
a third of the rows, and their state (the mixture's counts) resumes the same stream on
1 or 4 processes; 4 real processes x 2 devices train exactly as 1 process x 8 devices,
each reading a quarter of the rows. Oracle: the 1-process stream."""

import concurrent.futures
import re

import numpy as np
import pytest

from phijax import config_files, data
from phijax.data import config as data_config, hosts, pipeline
from tests.devices import xla_flags
from tests.test_multihost import _env, _launch, _rows, _run, _train_cmd


@pytest.mark.parametrize("processes", [64, 256])
@pytest.mark.parametrize("batch_size", [1024, 1000, 100])
def test_row_assignment_at_pod_scale(processes, batch_size):
  shares = [hosts.block_rows(batch_size, processes, i) for i in range(processes)]
  together = np.concatenate(shares)
  np.testing.assert_array_equal(together, np.arange(batch_size))  # disjoint, covering,
  sizes = [len(s) for s in shares]                                 # in 1-process order
  assert max(sizes) - min(sizes) <= 1
  assert sum(sizes) == batch_size


@pytest.fixture(scope="module")
def two_sources():
  c = config_files.load("tiny:runlocal", [])
  with c.unlocked():
    c.data.sources.email = data_config.source("stdlib", glob="email/*", weight=0.5)
  return c.data, data.load_tokenizer(c.data)


def _iterator(cfg_data, tok, rows=None, on_row=None, state=None):
  it = pipeline.make_train_iterator(cfg_data, tok, batch_size=6, seed=5, process_index=0,
                                    process_count=1, rows=rows, on_row=on_row)
  if state is not None:
    it.set_state(state)
  return it


def test_per_host_iterators_make_the_one_process_batches(two_sources):
  cfg_data, tok = two_sources
  whole = _iterator(cfg_data, tok)
  read = [[] for _ in range(3)]
  parts = [_iterator(cfg_data, tok, hosts.block_rows(6, 3, i),
                     on_row=lambda name, j, i=i: read[i].append((name, j))) for i in range(3)]
  for _ in range(4):
    want = next(whole)
    got = [next(p) for p in parts]
    for key in want:
      np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), want[key])
  assert [len(r) for r in read] == [8, 8, 8]  # a third of the 24 rows each, no overlap
  assert len(set(sum(read, []))) == 24
  assert {name for name, _ in sum(read, [])} == {"stdlib", "email"}
  # Every process's state is the same global position: it resumes on any count.
  states = [p.get_state() for p in parts]
  assert states[0] == states[1] == states[2] == whole.get_state()
  after = [next(whole) for _ in range(2)]
  one = _iterator(cfg_data, tok, state=states[0])
  four = [_iterator(cfg_data, tok, hosts.block_rows(6, 4, i), state=states[0])
          for i in range(4)]
  for want in after:
    np.testing.assert_array_equal(next(one)["inputs"], want["inputs"])
    np.testing.assert_array_equal(
        np.concatenate([next(f)["inputs"] for f in four]), want["inputs"])


def test_a_state_resumes_only_with_its_worker_count(two_sources):
  """Under grain workers each worker sits at its own position: a state saved with one
  worker count is refused by another, in one line (the order itself is the same)."""
  cfg_data, tok = two_sources
  it = _iterator(cfg_data, tok)
  next(it)
  state = it.get_state()
  assert state["workers"] == 1
  ds = pipeline.make_train_dataset(cfg_data, tok, batch_size=6, seed=5, process_index=0,
                                   process_count=1)
  ds.set_slice(slice(1, None, 2))  # what grain does to worker 1 of 2
  with pytest.raises(ValueError, match="saved with 1 grain worker") as e:
    iter(ds).set_state(state)
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="saved with data.workers=2"):
    _iterator(cfg_data, tok).set_state({"iterators_in_use_states": [state, state]})


def test_four_processes_train_like_one_reading_a_quarter_each(tmp_path):
  args = ["--config=configs/tiny.py:runlocal", "--config.train.steps=3",
          "--config.train.log_every=1", "--config.train.eval_every=0",
          "--config.train.save_every=0", "--config.train.samples=0",
          "--config.train.final_eval_batches=1", "--config.train.progress=false"]
  four, one = tmp_path / "four", tmp_path / "one"
  with concurrent.futures.ThreadPoolExecutor(2) as pool:  # the 4 wait in collectives
    done = [pool.submit(_run, _launch(four, args, processes=4)),
            pool.submit(_run, _train_cmd(one, args), _env(XLA_FLAGS=xla_flags(8)))]
    for future in done:
      future.result()
  (a, _), (b, _) = _rows(four), _rows(one)
  assert sorted(a) == sorted(b) == [1, 2, 3]
  np.testing.assert_allclose([a[s] for s in a], [b[s] for s in a], rtol=2e-5)
  # tiny:runlocal's 8-row batches over 8 devices: 2 rows of each batch per process.
  lines = []
  for i in range(4):
    text = open(four / "logs" / f"process_{i}.log").read()
    lines += re.findall(r"data: process (\d) of 4 read (\d+) training rows, 2 of every 8",
                        text)
  assert sorted(lines) == [(str(i), "6") for i in range(4)]
