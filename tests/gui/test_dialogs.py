"""The Learn and Complete dialogs: the specification's labels and defaults, OK and Cancel."""

from __future__ import annotations

import pytest

from napari_learn_complete._qt import dialogs
from napari_learn_complete.engine.ray_runner import RayEngine
from napari_learn_complete.engine.settings import CompleteSettings, LearnSettings, Mode
from napari_learn_complete.model.config import MODEL_CHOICES, Suggested
from napari_learn_complete.model.registry import create_model

pytestmark = pytest.mark.gui


def _labels_and_values(dialog) -> dict[str, object]:
    """Each named widget's value, by the label the user reads (by name for notes, which have
    none); a hidden note is left out."""
    return {w.label.strip() or w.name: w.value for w in dialog
            if w.name and (w.label.strip() or _shown(dialog, w))}


def _shown(dialog, widget) -> bool:
    """Whether ``widget`` shows when ``dialog`` does (before the dialog itself is shown)."""
    return widget.native.isVisibleTo(dialog.native)


def test_learn_dialog_defaults(qtbot) -> None:
    dialog = dialogs.learn_dialog("Learn boxes on 2 selected image(s)")
    qtbot.addWidget(dialog.native)
    assert dialog.native.windowTitle() == "Learn"
    assert _labels_and_values(dialog) == {
        "Nr of training epochs": 10,
        "Training mode": "Heads only",
        "Size of test data (%)": 0,
    }
    assert list(dialog.mode.choices) == ["Heads only", "Full model"]
    assert dialogs.learn_settings(dialog) == LearnSettings(epochs=10, mode="heads", test_percent=0)
    dialog.mode.value = "Full model"
    dialog.epochs.value = 3
    dialog.test_percent.value = 20
    assert dialogs.learn_settings(dialog) == LearnSettings(epochs=3, mode="full", test_percent=20)


def test_heads_only_on_an_untrained_backbone_is_warned_not_refused(qtbot, answers) -> None:
    """A model started from random weights, with no Full model Learn yet: Heads only would train
    on features that mean nothing; the note says so while Heads only is chosen, OK still goes."""
    dialog = dialogs.learn_dialog("scope", backbone_trained=False)
    qtbot.addWidget(dialog.native)
    assert _shown(dialog, dialog.mode_note)
    assert dialog.mode_note.value == dialogs.HEADS_ON_UNTRAINED
    assert dialogs.HEADS_ON_UNTRAINED.startswith("The backbone was never trained")
    assert "Full model is suggested" in dialogs.HEADS_ON_UNTRAINED
    dialog.mode.value = "Full model"
    assert not _shown(dialog, dialog.mode_note)
    dialog.mode.value = "Heads only"
    assert _shown(dialog, dialog.mode_note)

    trained = dialogs.learn_dialog("scope", backbone_trained=True)  # pretrained or Full-learned
    qtbot.addWidget(trained.native)
    assert not _shown(trained, trained.mode_note)

    seen: list[bool] = []
    answers.next(edit=lambda d: seen.append(d._magic_widget.mode_note.visible))
    assert dialogs.ask_learn("scope", backbone_trained=False) == LearnSettings(mode="heads")
    assert seen == [True]  # shown in the open dialog, and OK keeps the user's choice
def test_complete_dialog_defaults(qtbot) -> None:
    dialog = dialogs.complete_dialog("Complete boxes on 2 selected image(s)")
    qtbot.addWidget(dialog.native)
    assert _labels_and_values(dialog) == {
        "Min score": 0.0,
        "Max nr of detections": 1,
        "Remove existing first": False,
    }
    assert dialogs.complete_settings(dialog) == CompleteSettings()
    dialog.remove_existing.value = True
    dialog.min_score.value = 0.5
    assert dialogs.complete_settings(dialog) == CompleteSettings(
        min_score=0.5, max_detections=1, remove_existing=True
    )


def test_complete_from_a_category_has_no_remove_existing(qtbot) -> None:
    dialog = dialogs.complete_dialog("Find 'disc'", from_category=True)
    qtbot.addWidget(dialog.native)
    assert _labels_and_values(dialog) == {"Min score": 0.0, "Max nr of detections": 1}
    assert dialogs.complete_settings(dialog).remove_existing is False


def test_the_dialogs_start_from_the_settings_defaults(qtbot, monkeypatch) -> None:
    """engine/settings.py is the one home of the defaults: change them there and the dialogs
    follow."""

    class OtherLearn(LearnSettings):
        epochs: int = 7
        mode: Mode = "full"
        test_percent: float = 25.0

    class OtherComplete(CompleteSettings):
        min_score: float = 0.25
        max_detections: int = 3
        remove_existing: bool = True

    monkeypatch.setattr(dialogs, "LearnSettings", OtherLearn)
    monkeypatch.setattr(dialogs, "CompleteSettings", OtherComplete)
    learn = dialogs.learn_dialog("scope")
    complete = dialogs.complete_dialog("scope")
    qtbot.addWidget(learn.native)
    qtbot.addWidget(complete.native)
    assert dialogs.learn_settings(learn) == OtherLearn()
    assert _labels_and_values(learn)["Training mode"] == "Full model"
    assert dialogs.complete_settings(complete) == OtherComplete()


def test_ok_returns_settings_and_cancel_none(qtbot, answers) -> None:
    answers.next(accept=True, edit=lambda d: setattr(d._magic_widget.epochs, "value", 2))
    assert dialogs.ask_learn("scope") == LearnSettings(epochs=2)
    answers.next(accept=False)
    assert dialogs.ask_learn("scope") is None
    answers.next(accept=True)
    assert dialogs.ask_complete("scope") == (CompleteSettings(), None)  # on this machine
    answers.next(accept=False)
    assert dialogs.ask_complete("scope", from_category=True) is None
    assert answers.seen == ["Learn", "Learn", "Complete", "Complete"]


def test_the_first_learn_offers_the_model_to_create(qtbot, answers) -> None:
    """Without a model, Learn says it creates one and offers the model (fast, keypoints as the
    caller says) and its start: COCO with the settings' Heads only, or Random with Full model
    and the note why."""
    dialog = dialogs.learn_dialog("Learn boxes on 1 selected image(s)", new_model=False)
    qtbot.addWidget(dialog.native)
    assert _labels_and_values(dialog) == {
        "no_model": dialogs.NO_MODEL_YET,
        "Model": "fast",
        "choice_note": MODEL_CHOICES["fast"].describe(),
        "Predict keypoints too": False,
        "Initial weights": "COCO (torchvision, downloaded once)",
        "Nr of training epochs": 10,
        "Training mode": "Heads only",
        "Size of test data (%)": 0,
    }
    assert list(dialog.model_choice.choices) == ["fast", "balanced", "accurate", "keypoints"]
    assert list(dialog.weights.choices) == ["COCO (torchvision, downloaded once)",
                                            "Random (offline, learns slowly)"]
    assert dialogs.NO_MODEL_YET.startswith("No model yet: Learn will first create one")
    assert "random" not in dialogs.NO_MODEL_YET

    dialog.weights.value = "Random (offline, learns slowly)"
    assert dialog.mode.value == "Full model"
    assert _labels_and_values(dialog)["mode_note"] == dialogs.UNTRAINED_NOTE
    dialog.mode.value = "Heads only"  # the user may insist: warned
    assert _labels_and_values(dialog)["mode_note"] == dialogs.HEADS_ON_UNTRAINED
    dialog.weights.value = "COCO (torchvision, downloaded once)"
    assert dialog.mode.value == "Heads only" and not _shown(dialog, dialog.mode_note)

    dialog.model_choice.value = "keypoints"  # implies keypoints
    assert dialog.keypoints.value is True and not dialog.keypoints.enabled
    assert dialog.choice_note.value == MODEL_CHOICES["keypoints"].describe()
    dialog.model_choice.value = "balanced"
    assert dialog.keypoints.enabled

    def random_keypoints(d) -> None:
        d._magic_widget.weights.value = "Random (offline, learns slowly)"
        d._magic_widget.model_choice.value = "balanced"

    answers.next(edit=random_keypoints)
    assert dialogs.ask_first_learn("scope", keypoints=True) == (
        LearnSettings(mode="full"), dialogs.NewModel("balanced", True, "none"))
    answers.next()
    assert dialogs.ask_first_learn("scope", keypoints=False) == (
        LearnSettings(mode="heads"), dialogs.NewModel("fast", False, "coco"))
    answers.next(accept=False)
    assert dialogs.ask_first_learn("scope", keypoints=False) is None


def test_a_model_from_random_weights_is_offered_the_epochs_its_learn_needs(qtbot) -> None:
    """From random weights a first Learn needs about 200 optimizer steps, a later one about 100
    (docs/learn.md); 16 images in batches of 4 make 4 an epoch. A button offers the epochs that
    give them; the field keeps the specification's default until it is pressed."""

    def offered(**kwargs) -> str | None:
        dialog = dialogs.learn_dialog("scope", **kwargs)
        qtbot.addWidget(dialog.native)
        assert dialog.epochs.value == 10
        return dialog.use_epochs.text if _shown(dialog, dialog.use_epochs) else None

    random = {"backbone_pretrained": False, "batch_size": 4}
    assert offered(backbone_trained=False, images=16, **random) == \
        "Use 50 epochs: about 200 optimizer steps"
    assert offered(backbone_trained=True, images=16, **random) == \
        "Use 25 epochs: about 100 optimizer steps"
    assert offered(backbone_trained=True, images=48, **random) is None  # 120 steps in 10
    assert offered(backbone_trained=False, images=16, backbone_pretrained=False,
                   batch_size=2) == "Use 25 epochs: about 200 optimizer steps"
    assert offered(backbone_trained=True, images=16) is None  # pretrained: 10 suffice
    assert offered(backbone_trained=False, **random) is None  # the scope is not known

    dialog = dialogs.learn_dialog("scope", backbone_trained=False, images=16, **random)
    qtbot.addWidget(dialog.native)
    assert "a first Learn needs about 200 steps" in dialog.use_epochs.tooltip
    dialog.test_percent.value = 25  # 4 held out: 12 images, 3 steps an epoch
    assert dialog.use_epochs.text == "Use 67 epochs: about 200 optimizer steps"
    dialog.use_epochs.native.click()
    assert dialogs.learn_settings(dialog) == LearnSettings(epochs=67, mode="heads",
                                                           test_percent=25)
    assert not _shown(dialog, dialog.use_epochs)  # done: nothing more to offer

    first = dialogs.learn_dialog("scope", new_model=False, images=16)  # COCO first
    qtbot.addWidget(first.native)
    assert not _shown(first, first.use_epochs)
    first.weights.value = "Random (offline, learns slowly)"
    assert _shown(first, first.use_epochs)
    assert first.use_epochs.text == "Use 50 epochs: about 200 optimizer steps"


SUGGESTED = Suggested(min_score=0.4, max_detections=3, images=6, held_out=False)


def test_complete_dialog_offers_a_learns_suggestion_and_keeps_the_defaults(qtbot) -> None:
    dialog = dialogs.complete_dialog("scope", suggested=SUGGESTED)
    qtbot.addWidget(dialog.native)
    assert dialogs.complete_settings(dialog) == CompleteSettings()  # the specification's
    button = dialog.use_suggested
    assert button.text == "Use suggested: min score 0.40, max 3"
    assert "6 training image(s) (optimistic" in button.tooltip
    button.native.click()
    assert dialogs.complete_settings(dialog) == CompleteSettings(min_score=0.4, max_detections=3)
    assert not hasattr(dialogs.complete_dialog("scope"), "use_suggested")  # none: no button


def test_the_panel_offers_the_active_versions_suggestion_for_the_category(
        opened, answers, monkeypatch) -> None:
    panel, index = opened.panel, opened.index
    handle = create_model(index, weights="none")
    handle.config.replace(suggested={"disc": SUGGESTED}).save(handle.folder / "config.json")
    started = []
    monkeypatch.setattr(panel, "_start", lambda make, done: started.append(make.args))
    panel.select_images([7])
    buttons: list[bool] = []

    def press(dialog) -> None:
        form = dialog._magic_widget
        buttons.append(hasattr(form, "use_suggested"))
        if buttons[-1]:
            form.use_suggested.native.click()

    for category in ("disc", "square"):
        panel.set_active_category(category)
        answers.next(edit=press)
        panel.complete_images("roi")
    assert buttons == [True, False]  # square: that Learn judged no square
    assert [args[-1] for args in started] == [
        CompleteSettings(min_score=0.4, max_detections=3), CompleteSettings()]
    answers.next(edit=press)
    panel.complete_category("disc", "roi")
    assert buttons[-1] is True and started[-1][-1] == CompleteSettings(min_score=0.4,
                                                                       max_detections=3)


def test_complete_dialog_offers_ray_workers_when_ray_is_installed(qtbot) -> None:
    dialog = dialogs.complete_dialog("scope", engines=True)
    qtbot.addWidget(dialog.native)
    ray = [dialog.ray_address, dialog.ray_workers, dialog.ray_gpus]
    assert dialog.engine.label == "Run on" and dialog.engine.value == "This machine"
    assert [_shown(dialog, w) for w in ray] == [False] * 3  # shown while Ray is chosen
    assert dialogs.complete_settings(dialog) == CompleteSettings()
    assert dialogs.complete_engine(dialog) is None
    dialog.engine.value = "Ray workers"
    assert [_shown(dialog, w) for w in ray] == [True] * 3
    assert [w.label for w in ray] == ["Ray address", "Ray workers", "GPUs per worker"]
    assert dialogs.complete_engine(dialog) == RayEngine()
    dialog.ray_address.value, dialog.ray_workers.value = " ray://head:10001 ", 8
    dialog.ray_gpus.value = "0.5"
    assert dialogs.complete_engine(dialog) == RayEngine("ray://head:10001", 8, 0.5)
    assert not hasattr(dialogs.complete_dialog("scope"), "engine")  # without Ray: no choice


def test_the_panel_runs_complete_on_the_engine_chosen(opened, answers, monkeypatch) -> None:
    panel = opened.panel
    create_model(opened.index, weights="none")
    started = []
    monkeypatch.setattr(panel, "_start", lambda make, done: started.append(make.keywords))
    panel.select_images([7])
    panel.set_active_category("disc")

    def ray(dialog) -> None:
        dialog._magic_widget.engine.value = "Ray workers"
        dialog._magic_widget.ray_workers.value = 3

    answers.next(edit=ray)
    panel.complete_images("roi")
    answers.next(edit=ray)
    panel.complete_category("disc", "roi")
    monkeypatch.setattr(dialogs, "ray_installed", lambda: False)
    offered = []
    answers.next(edit=lambda d: offered.append(hasattr(d._magic_widget, "engine")))
    panel.complete_images("roi")
    assert started == [{"engine": RayEngine(workers=3)}] * 2 + [{"engine": None}]
    assert offered == [False]
