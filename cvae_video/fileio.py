"""Writing files so that a reader never sees half of one, and reading back the JSON files a run writes.

Every file cvae_video writes for later (checkpoints, configs, logs, pictures, reports) goes through
:func:`atomic_write`: the content goes to a temporary file beside the target, is flushed to disk, and the temporary
file is renamed over the target. A process killed at any moment leaves the old file or the new one, never a mix,
and at worst a ``.<name>.<pid>.<random>.tmp`` file that :func:`remove_stale_temp_files` deletes. The new file has
the permissions of any file the user creates (``0666`` less the umask), not the private ``0600`` of ``mkstemp``.
A folder that is written file by file (a generated data set, a packed cache) is filled in a temporary sibling and
renamed into place by :func:`atomic_folder`, with the user's normal permissions too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import CvaeError

TEMP_GLOB = ".*.tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a binary file object; its content replaces ``path`` in one step. Returns ``path``.

    The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` (UTF-8) into ``path``, atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, value, indent: int | None = 2) -> Path:
    """``value`` as JSON (and a final newline) into ``path``, atomically."""
    return atomic_write_text(path, json.dumps(value, indent=indent) + "\n")


def partial_prefix(folder: Path) -> str:
    """The name prefix of :func:`atomic_folder`'s temporary siblings of ``folder``."""
    return f".{folder.name}.partial-"


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """A new empty folder beside ``folder`` to fill; when the block ends it is renamed to ``folder`` in one step, and
    if the block raises it is deleted. Readers see the old folder or the new one, never a half-written one.

    ``replace``: an existing ``folder`` is moved aside and deleted once the new one is in place (a reader that
    holds a file of it open keeps valid data). Without it the rename fails (OSError) if a non-empty ``folder``
    exists by then, e.g. written meanwhile by another process. The temporary folder is named after this process,
    so that :func:`remove_abandoned` can delete those of writers that died; it is made with ``mkdir`` (the
    umask's permissions), not ``mkdtemp`` (``0700``).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(folder.parent, partial_prefix(folder))
    tmp = folder.parent / f"{partial_prefix(folder)}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        if replace and folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{time.time_ns()}")
            os.rename(folder, old)
            os.rename(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_abandoned(parent: Path, prefix: str) -> None:
    """Delete folders ``parent/<prefix><pid>-...`` left by writers on this machine whose process no longer runs."""
    for tmp in Path(parent).glob(prefix + "*"):
        pid = tmp.name[len(prefix):].split("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writes into ``folder`` left behind when their process died."""
    stale = [p for p in Path(folder).glob(TEMP_GLOB) if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class BadFile(CvaeError):
    """A file a run wrote earlier that cannot be read back (truncated, edited, not JSON)."""


def read_json(path: str | os.PathLike):
    """The JSON value in ``path``; :class:`BadFile` naming the file and the place when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise BadFile(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise BadFile(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def read_json_lines(path: str | os.PathLike) -> list:
    """The values of a JSON-lines file (blank lines skipped), [] if it does not exist; :class:`BadFile` naming the
    file and line when one is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        return []
    values = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise BadFile(f"{path}: line {number} is not valid JSON ({e.msg})") from None
    return values
