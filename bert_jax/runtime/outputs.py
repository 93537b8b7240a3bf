"""Output paths, checked before the work that fills them: a command that is going to
fail on its output says so first, not after an hour of inference. Shared by every
command that writes a named file or directory (predict, convert, and what comes)."""

import os

from etils import epath

from bert_jax.errors import InputError


def _check_parent(path: str, what: str) -> None:
  """The nearest existing ancestor of `path` is a writable directory (local paths:
  an object store has nothing to probe before the write)."""
  if "://" in path:
    return
  existing = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise InputError(f"{what} {path}: {existing} is a file, not a directory")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise InputError(f"{what} {path}: cannot write to {existing} (permission denied)")


def check_file(path: str, what: str = "output") -> None:
  """A file to be written (replaced if it exists): not a directory, and its directory
  exists and is writable."""
  if epath.Path(path).is_dir():
    raise InputError(f"{what} {path} is a directory; name a file")
  parent = os.path.dirname(os.path.abspath(path))
  if "://" not in path and not os.path.isdir(parent):
    raise InputError(f"{what} {path}: directory {parent} does not exist")
  _check_parent(path, what)


def check_new_dir(path: str, what: str = "output") -> None:
  """A directory to be made (its parents too): nothing there yet, or an empty directory."""
  p = epath.Path(path)
  if p.exists() and not p.is_dir():
    raise InputError(f"{what} {path} is a file, not a directory")
  if p.exists() and any(p.iterdir()):
    raise InputError(f"{what} {path} exists and is not empty")
  _check_parent(path, what)


def check_dir(path: str, what: str = "--workdir") -> None:
  """A directory to write into, made if missing: not a file, and writable."""
  if epath.Path(path).exists() and not epath.Path(path).is_dir():
    raise InputError(f"{what} {path} is a file, not a directory")
  if "://" not in path and os.path.isdir(path):
    if not os.access(path, os.W_OK | os.X_OK):
      raise InputError(f"{what} {path}: cannot write to it (permission denied)")
  else:
    _check_parent(path, what)


def with_umask(path: str) -> None:
  """Gives a directory tree made private (tempfile.mkdtemp: 0700) the modes the
  user's umask asks for, as if made with os.makedirs / open."""
  umask = os.umask(0)
  os.umask(umask)
  for root, dirs, files in os.walk(path):
    os.chmod(root, 0o777 & ~umask)
    for f in files:
      os.chmod(os.path.join(root, f), 0o666 & ~umask)
