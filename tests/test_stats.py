"""The verdicts of declared comparisons, on synthetic tables: an effect inside the
seed noise is inconclusive, a clear one on the claimed side reproduced, on the other
side refuted; rows pair by both seeds. Oracle: scipy's paired t-test (the interval
excludes zero exactly when its two-sided p-value is below 0.05)."""

import math
import os

import numpy as np
import pytest
from scipy import stats as scipy_stats

from phijax.sweeps import stats


def _rows(effect, noise, n=3, seed=0, field="opt"):
  """Control and arm rows for seeds 0..n-1: arm = control + effect + noise."""
  rng = np.random.default_rng(seed)
  rows = []
  for s in range(n):
    base = 3.0 + rng.normal(0, 0.3)  # seed-to-seed offsets, shared by the pair
    rows.append({field: "a", "seed": s, "data_seed": None, "status": "done",
                 "eval_loss": base})
    rows.append({field: "b", "seed": s, "data_seed": None, "status": "done",
                 "eval_loss": base + effect + rng.normal(0, noise)})
  return rows


LOWER = stats.Comparison("b lowers the loss", metric="eval_loss", claim="lower",
                         arm={"opt": "b"}, control={"opt": "a"})


@pytest.mark.parametrize("effect, noise, claim, want", [
    (-0.2, 0.01, "lower", "reproduced"),
    (+0.2, 0.01, "lower", "refuted"),
    (+0.2, 0.01, "higher", "reproduced"),
    (-0.01, 0.1, "lower", "inconclusive"),  # inside the noise
])
def test_verdicts(effect, noise, claim, want):
  c = stats.Comparison("x", "eval_loss", claim, {"opt": "b"}, {"opt": "a"})
  r = stats.compare(_rows(effect, noise), c)
  assert r.verdict == want and len(r.diffs) == 3
  d = [x for _, x in r.diffs]
  assert r.mean == pytest.approx(np.mean(d))
  p = scipy_stats.ttest_1samp(d, 0.0).pvalue
  assert (r.low > 0 or r.high < 0) == (p < 0.05)


def test_the_seed_offsets_cancel_in_pairs():
  """Seed offsets (0.3) ten times the effect (0.03) with little pair noise: the
  unpaired means would overlap, the paired differences are clear."""
  r = stats.compare(_rows(-0.03, 0.002, n=4), LOWER)
  assert r.verdict == "reproduced" and r.high < 0


def test_pairs_need_both_seeds_and_finished_runs():
  rows = _rows(-0.2, 0.01)
  rows[1]["status"] = "failed"  # seed 0's arm
  rows[2]["data_seed"] = 5  # seed 1's control ran another data order: no pair
  r = stats.compare(rows, LOWER)
  assert [k for k, _ in r.diffs] == [(2, None)]
  assert r.verdict == "inconclusive" and "1 finished pair" in r.note
  assert math.isnan(r.low)


def test_markdown_and_plot(tmp_path):
  results = [stats.compare(_rows(-0.2, 0.01), LOWER),
             stats.compare(_rows(0.0, 0.1, seed=1), LOWER)]
  md = stats.markdown(results)
  assert "**reproduced**" in md and "**inconclusive**" in md and "b lowers the loss" in md
  stats.plot(results, str(tmp_path / "paired.png"))
  assert os.path.getsize(tmp_path / "paired.png") > 1000
  with pytest.raises(ValueError, match="claim='smaller'"):
    stats.Comparison("x", "eval_loss", "smaller", {}, {})


def test_a_selector_that_is_ambiguous_or_unknown_is_an_error():
  rows = _rows(-0.2, 0.01) + [dict(r, opt2="x", arm=f"x{i}") for i, r in
                              enumerate(_rows(-0.2, 0.01))]
  rows = [dict(r, arm=r.get("arm", f"r{i}")) for i, r in enumerate(rows)]
  with pytest.raises(ValueError, match="same seeds; add the field"):
    stats.compare(rows, LOWER)
  with pytest.raises(ValueError, match=r"names \['optt'\], not fields"):
    stats.compare(rows, stats.Comparison("x", "eval_loss", "lower", {"optt": "b"},
                                         {"opt": "a"}))


def test_a_stated_value_as_control():
  """control=1.0: each arm row against the number (a one-sample interval); rows the
  arm selector leaves out (the control arms here) play no part."""
  rows = _rows(0.0, 0.01)
  for r, v in zip([r for r in rows if r["opt"] == "b"], (1.2, 1.3, 1.25)):
    r["ratio"] = v
  c = stats.Comparison("b's ratio is above 1", "ratio", "higher", {"opt": "b"}, 1.0)
  r = stats.compare(rows, c)
  assert r.verdict == "reproduced" and len(r.diffs) == 3
  assert r.mean == pytest.approx(0.25)
  assert scipy_stats.ttest_1samp([0.2, 0.3, 0.25], 0.0).pvalue < 0.05 and r.low > 0
  assert stats.compare(rows, stats.Comparison("x", "ratio", "lower", {"opt": "b"},
                                              1.28)).verdict == "inconclusive"
  assert "arm higher than 1 " in stats.markdown([r])
  with pytest.raises(ValueError, match="a stated value"):
    stats.Comparison("x", "ratio", "higher", {"opt": "b"}, "1")


def test_a_none_selector_means_the_arm_does_not_set_the_field():
  """``{"lr": None}`` picks the arms without an ``lr`` override, apart from those with
  one; in a table where no arm sets it (a partial run), every row, not an error."""
  rows = _rows(-0.2, 0.01)
  rows = [dict(r, arm=f"r{i}") for i, r in enumerate(rows)]
  c = stats.Comparison("b lowers the loss", "eval_loss", "lower", {"opt": "b", "lr": None},
                       {"opt": "a", "lr": None})
  assert stats.compare(rows, c).verdict == "reproduced"
  worse = [dict(r, lr=0.5, eval_loss=r["eval_loss"] + 1, arm=r["arm"] + "x") for r in rows]
  r = stats.compare(rows + worse, c)
  assert r.verdict == "reproduced" and all(d < 0 for _, d in r.diffs)


def test_a_field_of_arms_not_started_selects_nothing():
  """``fields`` (the sweep's, from sweep.json) names fields no started arm sets yet (an
  --only run): a selector naming one finds no rows, 0 pairs, rather than an error. A
  field in neither the rows nor ``fields`` is still an error (a typo)."""
  rows = [dict(r, arm=f"r{i}") for i, r in enumerate(_rows(-0.2, 0.01))]
  c = stats.Comparison("b at lr 0.5", "eval_loss", "lower", {"opt": "b", "lr": 0.5},
                       {"opt": "a"})
  r = stats.compare(rows, c, fields={"opt", "lr"})
  assert (r.verdict, r.diffs) == ("inconclusive", ()) and "0 finished" in r.note
  with pytest.raises(ValueError, match=r"names \['lr'\], not fields"):
    stats.compare(rows, c)


def test_a_metric_that_is_no_column_is_named():
  """A typo in the metric reads as an error naming the table's columns, not as a
  comparison with 0 finished pairs."""
  rows = [dict(r, arm=f"r{i}") for i, r in enumerate(_rows(-0.2, 0.01))]
  c = stats.Comparison("typo", "eval_los", "lower", {"opt": "b"}, {"opt": "a"})
  with pytest.raises(ValueError, match=r"metric 'eval_los' is not a column.*eval_loss"):
    stats.compare(rows, c)


def test_the_figure_leaves_pyplot_alone(tmp_path):
  """paired.png is drawn without pyplot: a notebook that writes results keeps showing
  its own figures (choosing a backend here once hid them)."""
  import sys
  rows = [dict(r, arm=f"r{i}") for i, r in enumerate(_rows(-0.2, 0.01))]
  c = stats.Comparison("b beats a", "eval_loss", "lower", {"opt": "b"}, {"opt": "a"})
  had_pyplot = "matplotlib.pyplot" in sys.modules
  stats.plot([stats.compare(rows, c)], str(tmp_path / "paired.png"))
  assert (tmp_path / "paired.png").stat().st_size > 0
  assert ("matplotlib.pyplot" in sys.modules) == had_pyplot
