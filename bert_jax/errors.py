"""Errors the CLI reports as one line (`error: ...`) instead of a traceback."""


class InputError(ValueError):
  """Bad user input: a glob matching nothing, an impossible batch size, ..."""
