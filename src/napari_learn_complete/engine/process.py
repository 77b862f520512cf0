"""The engine process: jobs run in a separate, fresh Python process that keeps torch warm.

Why: napari's canvas on Mesa loads libLLVM, and torch's triton exports its own LLVM symbols;
importing it afterwards in the same process segfaults (see docs/processes.md). A forked child
inherits the same libraries and crashes too, so the engine is a *spawned* interpreter: started as
``python -m napari_learn_complete.engine.process`` (a fresh process, like multiprocessing's
"spawn", without re-running napari's ``__main__``), talking over a socket pair.

Parent side: :class:`EngineProcess` implements :class:`~.jobs.Runner`. One job at a time (a
second waits); progress and committed changes stream back while ``run`` waits. Cancel is
cooperative first (the operation stops at its next check) and, after ``grace_s``, the process
is killed. If the process dies during a job, the runs it had started are marked failed
(cancelled, when killed on cancel) so they can be undone, and an
:class:`~napari_learn_complete.errors.EngineError` names what happened and the run to undo
for what it had saved. Between jobs the
process stays up with torch imported and the last predictor loaded, and exits after ``idle_s``
without work, when its parent goes away, or on :meth:`EngineProcess.close`.

Child side: :func:`main`.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from .. import errors
from ..errors import Cancelled, EngineError
from ..index import Change, Index
from .jobs import ChangeFn, Job, PredictorCache, run_job
from .progress import CancelFn, Progress, ProgressFn, report

log = logging.getLogger(__name__)

IDLE_S = 600.0  # the engine exits after this long without a job (frees the GPU)
GRACE_S = 2.0  # after a cancel, how long the operation may take to stop by itself
START_TIMEOUT_S = 120.0  # importing torch on a loaded machine is slow
POLL_S = 0.05


class EngineProcess:
    """A :class:`~.jobs.Runner` whose jobs run in a warm, spawned engine process."""

    def __init__(self, *, idle_s: float = IDLE_S, grace_s: float = GRACE_S,
                 env: dict[str, str] | None = None) -> None:
        self.idle_s, self.grace_s, self.env = idle_s, grace_s, env
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one job at a time
        self._jobs = 0

    # ----------------------------------------------------------------- process
    @property
    def pid(self) -> int | None:
        """The engine's process id while it runs (None before the first job or after it ends)."""
        return self._proc.pid if self.alive else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        """Start a fresh engine and wait until it has imported torch."""
        ours, theirs = socket.socketpair()
        env = {**os.environ, **(self.env or {})}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__, "--fd", str(theirs.fileno()),
             "--idle", str(self.idle_s)],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        if not self._conn.poll(START_TIMEOUT_S):
            self._kill()
            raise EngineError(f"the engine process did not start within {START_TIMEOUT_S:g} s")
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            message = None
        if message != ("ready",):
            self._kill()
            raise EngineError(f"the engine process failed to start ({self._exit_reason()}); "
                              "see napari's terminal for its error")

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exit_reason(self) -> str:
        code = self._proc.wait() if self._proc is not None else None
        if code is None:
            return "it is gone"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def close(self) -> None:
        """Stop the engine (frees its memory and GPU); the next job starts a fresh one."""
        if self._conn is not None and self.alive:
            try:
                self._conn.send(("stop",))
                self._proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    # --------------------------------------------------------------------- jobs
    def run(self, job: Job, *, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
            changed: ChangeFn | None = None) -> Any:
        """Run ``job`` in the engine; see :class:`~.jobs.Runner`."""
        if not self._lock.acquire(blocking=False):
            report(progress, Progress("waiting", 0, 0, "waiting for the running job to end"))
            while not self._lock.acquire(timeout=POLL_S):
                if cancel is not None and cancel():
                    raise Cancelled(f"{job.operation} cancelled before it started")
        try:
            self._jobs += 1
            if not self.alive:
                report(progress, Progress("starting", 0, 0, "starting the engine process"))
                self._kill()
                self._start()
            return self._supervise(self._jobs, job, progress, cancel, changed)
        finally:
            self._lock.release()

    def _supervise(self, number: int, job: Job, progress: ProgressFn | None,
                   cancel: CancelFn | None, changed: ChangeFn | None) -> Any:
        runs: list[int] = []  # the runs this job started, to close if the engine dies
        asked_at: float | None = None
        assert self._conn is not None
        self._conn.send(("job", number, job))
        while True:
            if cancel is not None and asked_at is None and cancel():
                asked_at = time.monotonic()
                self._conn.send(("cancel", number))
            if asked_at is not None and time.monotonic() - asked_at > self.grace_s:
                self._kill()
                kept = self._end_runs(job, runs, "cancelled")
                raise Cancelled(f"{job.operation} cancelled: the engine did not stop within "
                                f"{self.grace_s:g} s and was stopped; saved work is kept{kept}")
            try:
                if not self._conn.poll(POLL_S):
                    if not self.alive:
                        raise EOFError
                    continue
                message = self._conn.recv()
            except (EOFError, OSError):
                reason = self._exit_reason()
                self._kill()
                kept = self._end_runs(job, runs, "failed")
                raise EngineError(
                    f"the engine process died during {job.operation} ({reason}); the work "
                    f"saved before is kept and the index is intact{kept}"
                ) from None
            what = message[0]
            if what == "progress":
                report(progress, message[1])
            elif what == "change":
                change: Change = message[1]
                if change.table == "runs" and change.action == "added":
                    runs += change.ids
                if changed is not None:
                    changed(change)
            elif what == "done":
                return message[1]
            elif what == "error":
                raise _rebuild(*message[1:])

    @staticmethod
    def _end_runs(job: Job, runs: list[int], status: str) -> str:
        """Mark the job's runs ``status``; returns what they changed that stays, as the end of
        a message ("": nothing), naming the run that undoes it."""
        if not runs:
            return ""
        with Index(job.index) as index:
            index.runs.end_interrupted(runs, status)
            changed = {run: len(index.runs.observation_ids(run)) for run in runs}
        return "".join(f": {count} result(s) of run {run} were saved (undo it to take them back)"
                       for run, count in changed.items() if count)


def _rebuild(name: str, text: str, trace: str) -> Exception:
    """The exception the engine raised, as one of ours (their messages are for the user), else
    an EngineError naming it; never unpickled, so a torch error type never loads torch here."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.LearnCompleteError):
        return cls(text)
    log.error("engine error:\n%s", trace)
    return EngineError(f"{name}: {text}")


_shared: EngineProcess | None = None


def shared_engine() -> EngineProcess:
    """This process's engine (one, shared by every viewer); stopped when the process exits."""
    global _shared
    if _shared is None:
        _shared = EngineProcess()
        atexit.register(_shared.close)
    return _shared


# ---------------------------------------------------------------------- child side
def main(argv: list[str] | None = None) -> None:
    """The engine process: import torch once, then run jobs until idle, stopped or orphaned."""
    parser = argparse.ArgumentParser(prog="napari-learn-complete engine")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--idle", type=float, default=IDLE_S)
    args = parser.parse_args(argv)
    conn = Connection(args.fd)
    import torchvision.ops  # noqa: F401  (the cost a warm engine pays once)

    sending = threading.Lock()
    jobs: queue.Queue = queue.Queue()
    cancelled: set[int] = set()

    def send(*message: Any) -> None:
        with sending:
            conn.send(message)

    def listen() -> None:  # the parent's messages, while the main thread runs a job
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("stop",)  # the parent is gone
            if message[0] == "cancel":
                cancelled.add(message[1])
            else:
                jobs.put(message)
            if message[0] == "stop":
                return

    threading.Thread(target=listen, name="engine-listener", daemon=True).start()
    send("ready")
    predictors = PredictorCache()
    while True:
        try:
            message = jobs.get(timeout=args.idle)
        except queue.Empty:
            return  # idle: free the memory; the parent starts a new engine when needed
        if message[0] == "stop":
            return
        _, number, job = message
        try:
            result = run_job(
                job,
                progress=lambda event: send("progress", event),
                cancel=lambda number=number: number in cancelled,
                changed=lambda change: send("change", change),
                predictors=predictors,
            )
        except BaseException as exc:  # reported to the parent; the engine stays up
            send("error", type(exc).__name__, str(exc), traceback.format_exc())
        else:
            send("done", result)


if __name__ == "__main__":
    main()
