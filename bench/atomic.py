"""Atomic file writes, the harness's only two ways to put a file on disk so that no reader ever sees half of it:

- ``publish_once(folder, name, data)``: write-once publication (results): a temp file in the same folder,
  fsync, ``os.link`` to the final name (atomic, never overwrites: None if the name exists), fsync of the
  folder. On NFS a LINK the client resent after it succeeded reports EEXIST although the name is ours: the
  same file under both names is a success. A folder fsync the file system refuses as unsupported
  (``DIR_FSYNC_UNSUPPORTED``) is skipped with one warning per process.
- ``replace(path, write, token)``: replace-in-place (checkpoints, claim files): a temp file whose name carries
  the writer's ``token`` (two writers never share one), fsync, ``os.replace``.
On an error the temp file (and anything this call published) is removed before the OSError propagates.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import warnings
from pathlib import Path

DIR_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})
_refused_dir_fsync: str | None = None  # the folder whose fsync was refused first (warned once per process)


def fsync_dir(folder: Path) -> None:
    """fsync ``folder`` (its new entry); one the file system refuses as unsupported (DIR_FSYNC_UNSUPPORTED)
    is skipped with a warning, once per process; any other OSError propagates."""
    global _refused_dir_fsync
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in DIR_FSYNC_UNSUPPORTED:
            raise
        if _refused_dir_fsync is None:
            _refused_dir_fsync = str(folder)
            code = errno.errorcode.get(e.errno, str(e.errno))
            warnings.warn(f"cannot fsync the folder {folder} ({code}: {e.strerror or e}); each file is "
                          "fsynced, the folder entry is not (said once per process)", stacklevel=2)
    finally:
        os.close(fd)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether both names are one file (False if either is gone)."""
    try:
        return os.path.samestat(os.stat(a), os.stat(b))
    except FileNotFoundError:
        return False


def publish_once(folder: Path, name: str, data: bytes) -> Path | None:
    """Write ``data`` once to ``folder/name``; the path, or None (and nothing written) if that name exists."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    final, linked = folder / name, False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, final)
        except FileExistsError:
            if not same_file(tmp, final):
                return None  # another writer's file
        linked = True
        fsync_dir(folder)
        return final
    except BaseException:
        if linked:
            os.unlink(final)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def replace(path: Path, write, token: str) -> None:
    """Replace ``path`` by what ``write(file)`` writes (a binary file object), atomically."""
    tmp = path.with_name(f".{path.name}.{token}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
