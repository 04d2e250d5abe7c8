"""pass@k: the chance that at least one of k samples solves a problem.

Drawing k of n samples and checking whether any passes is noisy; Chen et al. 2021
("Evaluating Large Language Models Trained on Code", eq. 1) give the unbiased estimate
from n samples of which c pass: 1 - C(n-c, k) / C(n, k). The binomials overflow
floats for n in the hundreds, so it is computed as the product
prod_{i=n-c+1..n} (1 - k/i), which equals C(n-c, k) / C(n, k) and stays in [0, 1].
"""

from __future__ import annotations

import operator
from typing import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k for one problem with ``n`` samples, ``c`` of them correct."""
  n, c, k = (_count(name, value) for name, value in (("n", n), ("c", c), ("k", k)))
  if n < 1:
    raise ValueError(f"pass@k needs at least one sample, got n={n}")
  if not 0 <= c <= n:
    raise ValueError(f"c (correct samples) must be in 0..n={n}, got {c}")
  if not 1 <= k <= n:
    raise ValueError(f"k must be in 1..n={n} (more samples per problem allow larger k), got {k}")
  if n - c < k:
    return 1.0  # every k-subset contains a correct sample
  failing_all = 1.0
  for i in range(n - c + 1, n + 1):
    failing_all *= 1.0 - k / i
  return 1.0 - failing_all


def pass_at_k_table(counts: Iterable[tuple[int, int]],
                    ks: Sequence[int] = (1, 10, 100)) -> dict[str, float]:
  """``{"pass@k": mean over problems}`` from ``(n, c)`` per problem, for the ``ks`` that
  every problem's n allows (k <= the smallest n); the others are left out."""
  counts = [tuple(pair) for pair in counts]
  if not counts:
    raise ValueError("pass@k needs at least one problem")
  for pair in counts:
    if len(pair) != 2:
      raise ValueError(f"each problem's counts must be (n, c), got {pair!r}")
  smallest = min(_count("n", n) for n, _ in counts)
  table = {}
  for k in sorted(set(_count("k", k) for k in ks)):
    if k < 1:
      raise ValueError(f"k must be at least 1, got {k}")
    if k <= smallest:
      table[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
  return table


def _count(name: str, value) -> int:
  try:
    if isinstance(value, bool):
      raise TypeError
    return operator.index(value)
  except TypeError:
    raise ValueError(f"{name} must be an integer, got {value!r}") from None
