"""KEY=VALUE overrides of an ml_collections config for the benchmark scripts.

A value is read as a Python literal (1e-3, True, (2, 2)), else as a plain string.
The configs are locked, so an unknown key raises KeyError and a value of the wrong
type TypeError, before anything runs on a misspelt field.
"""

import ast
from collections.abc import Sequence


def apply(config, pairs: Sequence[str]) -> None:
  """Sets each `group.field=value` of PAIRS on CONFIG (a `--config.` prefix, as the
  CLI spells them, is allowed)."""
  for pair in pairs:
    key, sep, value = pair.removeprefix("--config.").partition("=")
    if not sep:
      raise ValueError(f"{pair!r}: expected KEY=VALUE")
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a plain string
    config.update_from_flattened_dict({key: value})


def check(parser, flag: str, config, pairs: Sequence[str]) -> None:
  """PAIRS applied to CONFIG (a throwaway copy of the one the run will build), or
  `parser.error` naming FLAG: one line before the script pretrains or writes."""
  try:
    apply(config, pairs)
  except (KeyError, TypeError, ValueError) as e:
    parser.error(f"{flag}: {e}")
