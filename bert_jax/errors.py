"""Errors the CLI reports as one line (`error: ...`) instead of a traceback."""


class InputError(ValueError):
  """Bad user input: a glob matching nothing, an impossible batch size, ..."""


class TrainingStopped(RuntimeError):
  """Training cannot go on (e.g. too many non-finite steps in a row); the last good
  checkpoint is left as it was."""
