"""Exceptions of the public API.

Every error a user can cause by bad input derives from :class:`LearnCompleteError`, so the CLI and
the widgets can show its message as it is; the message names the problem and the item it concerns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file the user pointed at; a missing or broken file is a :class:`BadInputError`
    naming the path and ``what`` it should have been ("COCO file", "proposals file", ...)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BadInputError(f"{path}: {what} not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable JSON {what} ({exc})") from exc
