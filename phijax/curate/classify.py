"""The quality classifier: labelled embeddings in, a probability of "good" for every
document out (phi-1 used a random forest on a code model's embeddings).

``fit`` holds back a stratified quarter of the labelled sample, reports held-out
accuracy of a random forest (phi-1's choice), a logistic regression (the baseline a
reviewer asks for) and the majority label (chance), then refits the chosen classifier on
the whole sample to score the corpus.
"""

from __future__ import annotations

import numpy as np

from phijax import cli

KINDS = ("forest", "logistic")
HELDOUT = 0.25


def _sklearn():
  try:
    import sklearn  # noqa: F401
  except ImportError:
    raise cli.UsageError("the quality classifier needs scikit-learn: pip install -e "
                         "'.[quality]'") from None


def make(kind: str, seed: int):
  _sklearn()
  from sklearn.ensemble import RandomForestClassifier
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  if kind == "forest":
    return RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=seed,
                                  n_jobs=1)
  return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))


def fit(X: np.ndarray, y: np.ndarray, *, kind: str = "forest", seed: int = 0):
  """``(classifier fitted on every label, report)``; the report's held-out numbers come
  from classifiers fitted on the other three quarters."""
  _sklearn()
  from sklearn.metrics import accuracy_score, balanced_accuracy_score
  from sklearn.model_selection import train_test_split
  y = np.asarray(y, np.int64)
  counts = np.bincount(y, minlength=2)
  if counts.min() < 4:
    raise cli.UsageError(f"the labelled sample has {counts[1]} good and {counts[0]} other "
                         "documents; the classifier needs at least 4 of each (label more "
                         "documents, or change the annotator's cut)")
  X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=HELDOUT, stratify=y,
                                            random_state=seed)
  report = dict(labelled=int(len(y)), good=int(counts[1]), heldout=int(len(y_te)),
                classifier=kind, majority=float(max(y_te.mean(), 1 - y_te.mean())))
  for k in KINDS:
    pred = make(k, seed).fit(X_tr, y_tr).predict(X_te)
    report[f"{k}_accuracy"] = float(accuracy_score(y_te, pred))
    report[f"{k}_balanced_accuracy"] = float(balanced_accuracy_score(y_te, pred))
  return make(kind, seed).fit(X, y), report


def good_probability(classifier, X: np.ndarray) -> np.ndarray:
  return classifier.predict_proba(X)[:, list(classifier.classes_).index(1)]
