"""Exceptions of the public API.

Every error a user can cause by bad input derives from :class:`LearnCompleteError`, so the CLI and
the widgets can show its message as it is; the message names the problem and the item it concerns.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# a full disk, an exhausted quota, a read-only file system: the user can act on these
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class LearnCompleteError(Exception):
    """Base of all errors the user can act on; the message is meant to be shown verbatim."""


class BadInputError(LearnCompleteError):
    """An input file or value is wrong (missing/corrupt image, malformed COCO, bad box...)."""


class RefusedError(LearnCompleteError):
    """The operation is not allowed in this state (identify model, empty scope, video...).

    The CLI exits with status 2 on this error; nothing was changed.
    """


class IndexLockedError(LearnCompleteError):
    """Another process holds the index's write lock longer than we are willing to wait."""


class BadWeightsError(BadInputError):
    """A weight file is not a model of ours, or does not match the model configuration."""


class EngineError(LearnCompleteError):
    """The engine process failed outside the operation's own checks: it died (a crash, the
    out-of-memory killer, a kill), or raised an error that is not one of ours (named in the
    message). The index keeps every batch committed before."""


class Cancelled(LearnCompleteError):
    """Raised inside long work when the ``cancel`` callback returned True."""


class StoppedPartWay(LearnCompleteError):
    """Long work stopped by an error after it had saved part of its result: the message gives
    the reason, what was kept and the run (``run_id``) that undoes it. The CLI exits with
    status 3 on this error, since the index did change."""

    def __init__(self, message: str, run_id: int | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


def storage_error(exc: BaseException, folder: str | os.PathLike | None = None
                  ) -> BadInputError | None:
    """``exc`` as the user's problem when it is a full disk, an exhausted quota or a read-only
    file system, naming the file ("no space left on device while writing PATH"), else the
    ``folder`` written in (a write to an open file does not name it); None for any other error."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        where = (f" while writing {exc.filename}" if exc.filename else
                 f" while writing in {folder}" if folder is not None else "")
        return BadInputError(f"{os.strerror(exc.errno).lower()}{where}")
    if isinstance(exc, sqlite3.OperationalError) and \
            getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        where = f" in {folder}" if folder is not None else ""
        return BadInputError(f"no space left on device while writing the index database{where}")
    return None


def explain(exc: BaseException) -> str:
    """An error's message for the user: ours as it is, a storage failure named (see
    :func:`storage_error`), any other with its type."""
    if isinstance(exc, LearnCompleteError):
        return str(exc)
    storage = storage_error(exc)
    return str(storage) if storage is not None else f"{type(exc).__name__}: {exc}"


def listed(names: Iterable[str], limit: int = 10) -> str:
    """The first ``limit`` names, joined, for a message about many items ("a, b, c ...")."""
    names = list(names)
    return f"{', '.join(names[:limit])}{' ...' if len(names) > limit else ''}"


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file the user pointed at; a missing or broken file is a :class:`BadInputError`
    naming the path and ``what`` it should have been ("COCO file", "proposals file", ...)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BadInputError(f"{path}: {what} not found") from exc
    except RecursionError:
        raise BadInputError(f"{path}: not a readable JSON {what} (nested too deeply)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable JSON {what} ({exc})") from exc
