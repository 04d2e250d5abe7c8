"""What the data pipeline raises and warns with."""


class DataError(ValueError):
  """Bad data input or data config: the message names the problem and the fix."""


class DataWarning(UserWarning):
  """Data was skipped (non-UTF-8 files, empty documents, truncated examples)."""
