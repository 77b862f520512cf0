"""The Learn and Complete dialogs (magicgui), with the specification's labels; their defaults
are those of :mod:`~napari_learn_complete.engine.settings`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Dialog,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QWidget

from ..engine.ray_runner import RayEngine, ray_installed
from ..engine.scope import advised_epochs, advised_steps
from ..engine.settings import CompleteSettings, LearnSettings
from ..model.config import MODEL_CHOICES, Suggested, TrainingSettings
from .model_panel import KEYPOINTS_TOO, WEIGHTS

# Training mode as the user reads it -> LearnSettings.mode
TRAINING_MODES = {"Heads only": "heads", "Full model": "full"}
# What a first Learn's model starts from, as the Model panel names it -> create_model's weights
FIRST_STARTS = {label: value for label, value in WEIGHTS if value in ("coco", "none")}
NO_MODEL_YET = "No model yet: Learn will first create one, as chosen below"
UNTRAINED_NOTE = "Full model: a random backbone has learned nothing, training only its heads " \
                 "learns little"
HEADS_ON_UNTRAINED = ("The backbone was never trained (random start, no Full model Learn yet): "
                      "Heads only will learn little; Full model is suggested")


# "Run on" as the user reads it -> whether it is the Ray engine
ENGINES = {"This machine": False, "Ray workers": True}
# "GPUs per worker" -> RayEngine.gpus_per_worker (None: one if the cluster has GPUs)
WORKER_GPUS = {"1 if the cluster has GPUs": None, "0 (CPUs)": 0.0, "0.5": 0.5, "1": 1.0,
               "2": 2.0}


class CompleteRequest(NamedTuple):
    """What the Complete dialog's OK asks for: its settings, and Ray workers or None (this
    machine)."""

    settings: CompleteSettings
    engine: RayEngine | None = None


@dataclass(frozen=True)
class NewModel:
    """The model a first Learn creates: ``create_model``'s choice, keypoints and weights."""

    choice: str
    keypoints: bool
    weights: str


def _dialog(title: str, scope: str, widgets: list, parent: QWidget | None) -> Dialog:
    dialog = Dialog(widgets=[Label(value=scope), *widgets])
    dialog.native.setWindowTitle(title)
    if parent is not None:
        dialog.native.setParent(parent, Qt.WindowType.Dialog)
    return dialog


def _mode_label(mode: str) -> str:
    return next(label for label, m in TRAINING_MODES.items() if m == mode)


def _mode_note(mode: str, backbone_trained: bool, new_model: bool) -> str:
    """Why the mode matters on a backbone that never learned anything ("" when it does not)."""
    if backbone_trained:
        return ""
    if mode == "heads":
        return HEADS_ON_UNTRAINED
    return UNTRAINED_NOTE if new_model else ""


def learn_dialog(scope: str, parent: QWidget | None = None, *,
                 new_model: bool | None = None, backbone_trained: bool = True,
                 backbone_pretrained: bool = True, images: int = 0,
                 batch_size: int = TrainingSettings().batch_size) -> Dialog:
    """Nr of training epochs, Training mode, Size of test data %, set to LearnSettings().

    ``backbone_trained`` False (the active model started from random weights and had no Full
    model Learn yet): while Training mode is Heads only, a note says it will learn little and
    suggests Full model; it never stops the user.

    ``backbone_pretrained`` False (the model started from random weights) and ``images`` (the
    Learn's scope) known: when the epochs give fewer optimizer steps (of ``batch_size`` images)
    than such a model needs (:func:`~napari_learn_complete.engine.scope.advised_steps`), a
    button puts the epochs that do in the field; the field keeps its default until pressed.

    ``new_model`` (the index has no model yet; True when it should predict keypoints): the
    dialog says Learn creates one first and offers the model, keypoints and the start weights;
    Training mode follows the start: Full model from random weights (a heads-only Learn on a
    random backbone learns next to nothing), the settings' default from COCO's.
    """
    defaults = LearnSettings()
    epochs = SpinBox(name="epochs", label="Nr of training epochs", value=defaults.epochs, min=1,
                     max=10_000)
    modes = ComboBox(name="mode", label="Training mode", choices=list(TRAINING_MODES),
                     value=_mode_label(defaults.mode))
    # notes and buttons: a blank label (an empty one shows the name)
    use_epochs = PushButton(name="use_epochs", label=" ")
    note = Label(name="mode_note", label=" ")
    test = SpinBox(name="test_percent", label="Size of test data (%)",
                   value=round(defaults.test_percent), min=0, max=90)

    def trained() -> bool:  # the backbone the Learn starts from
        return backbone_trained if new_model is None else \
            FIRST_STARTS[dialog.weights.value] != "none"

    def pretrained() -> bool:
        return backbone_pretrained if new_model is None else trained()

    def follow() -> None:
        text = _mode_note(TRAINING_MODES[modes.value], trained(), new_model is not None)
        note.value = text
        note.visible = bool(text)

    def advised() -> tuple[int, int]:  # (epochs, steps) a model from random weights needs
        steps = advised_steps(trained(), pretrained()) if images else 0  # 0: nothing to advise
        return advised_epochs(images, test.value, batch_size, steps), steps

    def advise() -> None:
        wanted, steps = advised()
        use_epochs.text = f"Use {wanted} epochs: about {steps} optimizer steps"
        use_epochs.tooltip = (
            f"From random weights a {'first ' if not trained() else ''}Learn needs about "
            f"{steps} steps to learn something usable (docs/learn.md); {images} image(s) in "
            f"batches of {batch_size} are few steps an epoch")
        use_epochs.visible = wanted > epochs.value

    use_epochs.changed.connect(lambda: setattr(epochs, "value", advised()[0]))
    for widget in (epochs, test):
        widget.changed.connect(advise)

    if new_model is None:
        dialog = _dialog("Learn", scope, [epochs, use_epochs, modes, note, test], parent)
    else:
        choice = ComboBox(name="model_choice", label="Model", choices=list(MODEL_CHOICES),
                          value="fast")
        described = Label(name="choice_note", label=" ")
        keypoints = CheckBox(name="keypoints", label=KEYPOINTS_TOO, value=new_model)
        start = ComboBox(name="weights", label="Initial weights", choices=list(FIRST_STARTS))
        dialog = _dialog("Learn", scope, [
            Label(name="no_model", label=" ", value=NO_MODEL_YET), choice, described, keypoints,
            start, epochs, use_epochs, modes, note, test,
        ], parent)

        def chosen() -> None:  # as in the Model panel: the keypoints model implies keypoints
            picked = MODEL_CHOICES[choice.value]
            described.value = picked.describe()
            implied = picked.architecture == "keypointrcnn"
            if implied:
                keypoints.value = True
            keypoints.enabled = not implied

        def started() -> None:
            modes.value = _mode_label(defaults.mode if trained() else "full")
            follow()  # the note follows the start even when the mode stays
            advise()

        choice.changed.connect(chosen)
        start.changed.connect(started)
        chosen()
        started()
    modes.changed.connect(follow)
    follow()  # once the dialog holds the note: a parentless widget made visible is a window
    advise()
    return dialog


def learn_settings(dialog: Dialog) -> LearnSettings:
    return LearnSettings(
        epochs=dialog.epochs.value,
        mode=TRAINING_MODES[dialog.mode.value],
        test_percent=float(dialog.test_percent.value),
    )


def complete_dialog(
    scope: str, *, from_category: bool = False, parent: QWidget | None = None,
    suggested: Suggested | None = None, engines: bool = False,
) -> Dialog:
    """Min score, Max nr of detections and, except from a category, Remove existing first, set
    to CompleteSettings(): Complete from a category never touches existing annotations. With
    ``suggested`` (the active version's Learn judged it for the category), a button puts its
    min score and max detections in the fields; the fields keep the defaults until pressed.
    With ``engines`` (Ray is installed), "Run on" offers Ray workers (a local Ray, or the
    cluster at an address) besides this machine; their settings show when Ray is chosen."""
    defaults = CompleteSettings()
    min_score = FloatSpinBox(name="min_score", label="Min score", value=defaults.min_score,
                             min=0.0, max=1.0, step=0.05)
    max_detections = SpinBox(name="max_detections", label="Max nr of detections",
                             value=defaults.max_detections, min=1, max=1000)
    widgets: list = [min_score, max_detections]
    if suggested is not None:
        use = PushButton(name="use_suggested", text=(
            f"Use suggested: min score {suggested.min_score:.2f}, "
            f"max {suggested.max_detections}"))
        judged = "held-out" if suggested.held_out else "training"
        use.tooltip = (
            f"The fewest corrections on the last Learn's {suggested.images} {judged} image(s)"
            + ("" if suggested.held_out else " (optimistic: the model learned from them)"))

        def apply() -> None:
            min_score.value = suggested.min_score
            max_detections.value = suggested.max_detections

        use.changed.connect(apply)
        widgets.append(use)
    if not from_category:
        widgets.append(CheckBox(name="remove_existing", label="Remove existing first",
                                value=defaults.remove_existing))
    if engines:
        widgets += _engine_widgets()
    return _dialog("Complete", scope, widgets, parent)


def _engine_widgets() -> list:
    """"Run on" and, shown while Ray is chosen, the Ray engine's settings (RayEngine's
    defaults)."""
    defaults = RayEngine()
    engine = ComboBox(name="engine", label="Run on", choices=list(ENGINES),
                      value=next(iter(ENGINES)))
    ray = [
        LineEdit(name="ray_address", label="Ray address", value="",
                 tooltip="Empty: a local Ray (or the cluster in RAY_ADDRESS); "
                         "else e.g. ray://head:10001"),
        SpinBox(name="ray_workers", label="Ray workers", value=defaults.workers, min=1,
                max=4096),
        ComboBox(name="ray_gpus", label="GPUs per worker", choices=list(WORKER_GPUS),
                 value=next(iter(WORKER_GPUS))),
    ]

    def follow() -> None:
        for widget in ray:
            widget.visible = ENGINES[engine.value]

    engine.changed.connect(follow)
    follow()
    return [engine, *ray]


def complete_settings(dialog: Dialog) -> CompleteSettings:
    """The dialog's values; without the checkbox (from a category) nothing is removed."""
    remove = getattr(dialog, "remove_existing", None)
    return CompleteSettings(
        min_score=float(dialog.min_score.value),
        max_detections=int(dialog.max_detections.value),
        remove_existing=bool(remove.value) if remove is not None else False,
    )


def complete_engine(dialog: Dialog) -> RayEngine | None:
    """The Ray engine chosen in the dialog; None: this machine (or no choice offered)."""
    engine = getattr(dialog, "engine", None)
    if engine is None or not ENGINES[engine.value]:
        return None
    return RayEngine(address=dialog.ray_address.value.strip() or None,
                     workers=int(dialog.ray_workers.value),
                     gpus_per_worker=WORKER_GPUS[dialog.ray_gpus.value])


def ask_learn(scope: str, parent: QWidget | None = None, *, backbone_trained: bool = True,
              backbone_pretrained: bool = True, images: int = 0,
              batch_size: int = TrainingSettings().batch_size) -> LearnSettings | None:
    """Show the Learn dialog modally (see :func:`learn_dialog`); the settings on OK, None on
    Cancel."""
    dialog = learn_dialog(scope, parent, backbone_trained=backbone_trained,
                          backbone_pretrained=backbone_pretrained, images=images,
                          batch_size=batch_size)
    return learn_settings(dialog) if dialog.exec() else None


def ask_first_learn(
    scope: str, keypoints: bool, parent: QWidget | None = None, *, images: int = 0
) -> tuple[LearnSettings, NewModel] | None:
    """The Learn dialog of an index without a model (see :func:`learn_dialog`): the settings
    and the model to create on OK, None on Cancel."""
    dialog = learn_dialog(scope, parent, new_model=keypoints, images=images)
    if not dialog.exec():
        return None
    return learn_settings(dialog), NewModel(
        dialog.model_choice.value, dialog.keypoints.value, FIRST_STARTS[dialog.weights.value])


def ask_complete(
    scope: str, *, from_category: bool = False, parent: QWidget | None = None,
    suggested: Suggested | None = None,
) -> CompleteRequest | None:
    """Show the Complete dialog modally (the engine choice when Ray is installed); the
    settings and engine on OK, None on Cancel."""
    dialog = complete_dialog(scope, from_category=from_category, parent=parent,
                             suggested=suggested, engines=ray_installed())
    if not dialog.exec():
        return None
    return CompleteRequest(complete_settings(dialog), complete_engine(dialog))


