"""How the benchmark scripts talk: progress on stderr, the figures as one JSON line on stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(figures: dict[str, Any], path: Path | None) -> None:
    """Print ``figures`` as the last stdout line, and write them to ``path`` when given."""
    text = json.dumps(figures)
    if path:
        path.write_text(text + "\n")
    print(text)
