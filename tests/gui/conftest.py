"""GUI fixtures: the real napari viewer with the sample index open and the Index panel docked,
and a helper that answers the next modal dialog the way a user would."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QDialog

from napari_learn_complete._napari.layers import IndexLayers, open_index
from napari_learn_complete._qt.index_panel import IndexPanel
from napari_learn_complete.index import Index


@dataclass
class Opened:
    viewer: object
    layers: IndexLayers
    panel: IndexPanel
    index: Index


@pytest.fixture
def opened(make_napari_viewer, sample_index: Index) -> Opened:
    """The sample index open in a real viewer with the Index panel docked (no model yet)."""
    viewer = make_napari_viewer()
    layers = open_index(viewer, sample_index)
    panel = IndexPanel(viewer)
    viewer.window.add_dock_widget(panel, name="Index panel")
    return Opened(viewer, layers, panel, sample_index)


ANSWER_WITHIN_S = 30.0  # a dialog a test expects opens within this (it opens at once normally)
_POLL_MS = 20


@dataclass
class _Expected:
    accept: bool
    edit: Callable[[QDialog], None] | None
    within_s: float
    deadline: float | None = None  # set when it is the next dialog to answer


class DialogAnswers:
    """Answers the modal dialogs a test expects, in order, as a user would, and records their
    window titles in ``seen``.

    Each :meth:`next` expects one dialog within ``within_s`` seconds of being the next one to
    answer. A dialog that does not come in time is given up (and fails the test, see
    :func:`answers`); at the end of the test nothing is left waiting, so an answer meant for one
    test can never reach another test's dialog.
    """

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.problems: list[str] = []
        self._expected: deque[_Expected] = deque()
        self._timer = QTimer(interval=_POLL_MS)
        self._timer.timeout.connect(self._poll)

    def next(self, accept: bool = True, edit: Callable[[QDialog], None] | None = None,
             within_s: float = ANSWER_WITHIN_S) -> None:
        """Answer the next modal dialog: ``edit`` it, then OK (``accept``) or Cancel."""
        self._expected.append(_Expected(accept, edit, within_s))
        self._timer.start()

    def _poll(self) -> None:
        if not self._expected:
            self._timer.stop()
            return
        expected = self._expected[0]
        if expected.deadline is None:
            expected.deadline = time.monotonic() + expected.within_s
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QDialog):
            if time.monotonic() > expected.deadline:
                self._expected.popleft()
                self.problems.append(self._describe(expected, f"no dialog opened within "
                                                              f"{expected.within_s:g} s"))
            return
        self._expected.popleft()
        self.seen.append(dialog.windowTitle())
        try:
            if expected.edit is not None:
                expected.edit(dialog)
        except Exception as exc:  # reported by the fixture; the dialog must close
            self.problems.append(self._describe(expected, f"editing {dialog.windowTitle()!r} "
                                                          f"raised {exc!r}"))
            dialog.reject()
            return
        dialog.accept() if expected.accept else dialog.reject()

    @staticmethod
    def _describe(expected: _Expected, what: str) -> str:
        return f"answer {'OK' if expected.accept else 'Cancel'}: {what}"

    def close(self) -> list[str]:
        """Stop answering; returns the problems, including the dialogs still expected."""
        self._timer.stop()
        self.problems += [self._describe(e, "the test ended before the dialog opened")
                          for e in self._expected]
        self._expected.clear()
        return self.problems


@pytest.fixture
def answers(qtbot) -> Iterator[DialogAnswers]:
    """Answers the dialogs a test expects (``answers.next(...)`` before the action that opens
    one); a test whose expected dialog never opened fails."""
    answering = DialogAnswers()
    yield answering
    problems = answering.close()
    if problems:
        pytest.fail("expected dialogs went unanswered: " + "; ".join(problems))
