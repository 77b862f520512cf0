"""``napari-learn-complete`` command line: the same operations as the widgets, for scripts.

Each sub-module adds its sub-commands with ``register(subparsers)``; a command is a function
``run(args) -> int``. Exit codes: 0 done; 2 refused or bad input, a full disk included (nothing was
changed, the reason is printed on stderr); 3 stopped part-way (the reason, what was kept and the
``undo`` command that removes it are printed); 1 failure (the engine or the training itself).
Progress goes to stderr (:class:`ProgressBar`); commands that produce a result print it as one
JSON line, the last line on stdout.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tqdm import tqdm

from ..engine.progress import Progress
from ..errors import EngineError, LearnCompleteError, StoppedPartWay, storage_error

EXIT_OK, EXIT_FAILURE, EXIT_REFUSED, EXIT_STOPPED = 0, 1, 2, 3


def emit_json(summary: dict[str, Any]) -> None:
    """Print the one-line JSON summary that scripts read from the last stdout line."""
    print(json.dumps(summary, separators=(",", ":"), default=str), flush=True)


def command(subparsers: argparse._SubParsersAction, name: str,
            run: Callable[[argparse.Namespace], int], help: str, *,
            index_help: str = "index folder") -> argparse.ArgumentParser:
    """A subcommand on one index folder (its first argument) that ``run`` carries out."""
    parser = subparsers.add_parser(name, help=help)
    parser.add_argument("index", type=Path, help=index_help)
    parser.set_defaults(run=run)
    return parser


class ProgressBar:
    """The ``progress`` callback of every command: a tqdm bar on stderr, a new one for each stage
    (or count started again), its postfix the event's message and loss. Used as a context manager
    so the last bar is finished before the summary is printed."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None

    def __call__(self, event: Progress) -> None:
        bar = self._bar
        if bar is None or bar.desc != event.stage or event.done < bar.n:
            self.close()
            bar = self._bar = tqdm(desc=event.stage, total=event.total or None, file=sys.stderr,
                                   unit="step")
        loss = None if event.loss is None else f"loss {event.loss:.4f}"
        bar.set_postfix_str(", ".join(filter(None, (event.message, loss))), refresh=False)
        bar.update(event.done - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    parser = argparse.ArgumentParser(
        prog="napari-learn-complete",
        description="Learn & Complete: fine-tune a detector on a few images, annotate the rest.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in commands.MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prefix = f"napari-learn-complete {args.command}"
    try:
        return int(args.run(args) or EXIT_OK)
    except StoppedPartWay as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        if exc.run_id is not None:
            index = shlex.quote(str(getattr(args, "index", "INDEX")))
            print(f"undo it with: napari-learn-complete undo {index} {exc.run_id}",
                  file=sys.stderr)
        return EXIT_STOPPED
    except EngineError as exc:  # not the user's input
        print(f"{prefix} failed: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except LearnCompleteError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as exc:
        # the operations leave the index as it was
        storage = storage_error(exc, getattr(args, "index", None))
        if storage is None:
            raise
        print(f"{prefix}: {storage}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
