"""GUI fixtures: the real napari viewer with the sample index open and the Index panel docked,
and a helper that answers the next modal dialog the way a user would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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


@dataclass
class DialogAnswers:
    """Records the dialogs that opened (their window titles) and answers them."""

    seen: list[str] = field(default_factory=list)

    def next(self, accept: bool = True, edit: Callable[[QDialog], None] | None = None) -> None:
        """Answer the next modal dialog: ``edit`` it, then OK (``accept``) or Cancel."""

        def answer() -> None:
            dialog = QApplication.activeModalWidget()
            if not isinstance(dialog, QDialog):
                QTimer.singleShot(20, answer)
                return
            self.seen.append(dialog.windowTitle())
            if edit is not None:
                edit(dialog)
            dialog.accept() if accept else dialog.reject()

        QTimer.singleShot(0, answer)


@pytest.fixture
def answers() -> DialogAnswers:
    return DialogAnswers()
