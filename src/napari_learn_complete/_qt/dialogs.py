"""The Learn and Complete dialogs (magicgui), with the specification's labels; their defaults
are those of :mod:`~napari_learn_complete.engine.settings`."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Dialog, FloatSpinBox, Label, SpinBox
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QWidget

from ..engine.settings import CompleteSettings, LearnSettings
from .model_panel import ARCHITECTURES

# Training mode as the user reads it -> LearnSettings.mode
TRAINING_MODES = {"Heads only": "heads", "Full model": "full"}
# The model a first Learn creates, as the Model panel names it -> keypoints or not
NEW_MODELS = dict(ARCHITECTURES)
NO_MODEL_YET = "No model yet: Learn will first create one (random initial weights)"
UNTRAINED_NOTE = "Full model: a new model's backbone is untrained, training only its heads " \
                 "learns little"


def _dialog(title: str, scope: str, widgets: list, parent: QWidget | None) -> Dialog:
    dialog = Dialog(widgets=[Label(value=scope), *widgets])
    dialog.native.setWindowTitle(title)
    if parent is not None:
        dialog.native.setParent(parent, Qt.WindowType.Dialog)
    return dialog


def learn_dialog(scope: str, parent: QWidget | None = None, *,
                 new_model: bool | None = None) -> Dialog:
    """Nr of training epochs, Training mode, Size of test data %, set to LearnSettings().

    ``new_model`` (the index has no model yet): the dialog says Learn creates one first and
    offers its type, Keypoint R-CNN when ``new_model`` is True; Training mode then starts at Full
    model, since a heads-only Learn on a random backbone learns next to nothing.
    """
    defaults = LearnSettings()
    mode = "full" if new_model is not None else defaults.mode
    epochs = SpinBox(name="epochs", label="Nr of training epochs", value=defaults.epochs, min=1,
                     max=10_000)
    modes = ComboBox(name="mode", label="Training mode", choices=list(TRAINING_MODES),
                     value=next(label for label, m in TRAINING_MODES.items() if m == mode))
    test = SpinBox(name="test_percent", label="Size of test data (%)",
                   value=round(defaults.test_percent), min=0, max=90)
    if new_model is None:
        return _dialog("Learn", scope, [epochs, modes, test], parent)
    model_type = ComboBox(
        name="model_type", label="Model type", choices=list(NEW_MODELS),
        value=next(label for label, keypoints in NEW_MODELS.items() if keypoints == new_model),
    )
    return _dialog("Learn", scope, [  # notes: a blank label (an empty one shows the name)
        Label(name="no_model", label=" ", value=NO_MODEL_YET), model_type, epochs, modes,
        Label(name="mode_note", label=" ", value=UNTRAINED_NOTE), test,
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


def ask_first_learn(
    scope: str, keypoints: bool, parent: QWidget | None = None
) -> tuple[LearnSettings, bool] | None:
    """The Learn dialog of an index without a model (see :func:`learn_dialog`): the settings
    and whether the model to create predicts keypoints on OK, None on Cancel."""
    dialog = learn_dialog(scope, parent, new_model=keypoints)
    if not dialog.exec():
        return None
    return learn_settings(dialog), NEW_MODELS[dialog.model_type.value]


def ask_complete(
    scope: str, *, from_category: bool = False, parent: QWidget | None = None
) -> CompleteSettings | None:
    """Show the Complete dialog modally; the settings on OK, None on Cancel."""
    dialog = complete_dialog(scope, from_category=from_category, parent=parent)
    return complete_settings(dialog) if dialog.exec() else None
