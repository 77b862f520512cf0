"""The Learn and Complete dialogs (magicgui), with the specification's labels; their defaults
are those of :mod:`~napari_learn_complete.engine.settings`."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Dialog, FloatSpinBox, Label, SpinBox
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QWidget

from ..engine.settings import CompleteSettings, LearnSettings

# Training mode as the user reads it -> LearnSettings.mode
TRAINING_MODES = {"Heads only": "heads", "Full model": "full"}


def _dialog(title: str, scope: str, widgets: list, parent: QWidget | None) -> Dialog:
    dialog = Dialog(widgets=[Label(value=scope), *widgets])
    dialog.native.setWindowTitle(title)
    if parent is not None:
        dialog.native.setParent(parent, Qt.WindowType.Dialog)
    return dialog


def learn_dialog(scope: str, parent: QWidget | None = None) -> Dialog:
    """Nr of training epochs, Training mode, Size of test data %, set to LearnSettings()."""
    defaults = LearnSettings()
    mode = next(label for label, mode in TRAINING_MODES.items() if mode == defaults.mode)
    return _dialog("Learn", scope, [
        SpinBox(name="epochs", label="Nr of training epochs", value=defaults.epochs, min=1,
                max=10_000),
        ComboBox(name="mode", label="Training mode", choices=list(TRAINING_MODES), value=mode),
        SpinBox(name="test_percent", label="Size of test data (%)",
                value=round(defaults.test_percent), min=0, max=90),
    ], parent)


def learn_settings(dialog: Dialog) -> LearnSettings:
    return LearnSettings(
        epochs=dialog.epochs.value,
        mode=TRAINING_MODES[dialog.mode.value],
        test_percent=float(dialog.test_percent.value),
    )


def complete_dialog(
    scope: str, *, from_category: bool = False, parent: QWidget | None = None
) -> Dialog:
    """Min score, Max nr of detections and, except from a category, Remove existing first, set
    to CompleteSettings(): Complete from a category never touches existing annotations."""
    defaults = CompleteSettings()
    widgets = [
        FloatSpinBox(name="min_score", label="Min score", value=defaults.min_score, min=0.0,
                     max=1.0, step=0.05),
        SpinBox(name="max_detections", label="Max nr of detections",
                value=defaults.max_detections, min=1, max=1000),
    ]
    if not from_category:
        widgets.append(CheckBox(name="remove_existing", label="Remove existing first",
                                value=defaults.remove_existing))
    return _dialog("Complete", scope, widgets, parent)


def complete_settings(dialog: Dialog) -> CompleteSettings:
    """The dialog's values; without the checkbox (from a category) nothing is removed."""
    remove = getattr(dialog, "remove_existing", None)
    return CompleteSettings(
        min_score=float(dialog.min_score.value),
        max_detections=int(dialog.max_detections.value),
        remove_existing=bool(remove.value) if remove is not None else False,
    )


def ask_learn(scope: str, parent: QWidget | None = None) -> LearnSettings | None:
    """Show the Learn dialog modally; the settings on OK, None on Cancel."""
    dialog = learn_dialog(scope, parent)
    return learn_settings(dialog) if dialog.exec() else None


def ask_complete(
    scope: str, *, from_category: bool = False, parent: QWidget | None = None
) -> CompleteSettings | None:
    """Show the Complete dialog modally; the settings on OK, None on Cancel."""
    dialog = complete_dialog(scope, from_category=from_category, parent=parent)
    return complete_settings(dialog) if dialog.exec() else None
