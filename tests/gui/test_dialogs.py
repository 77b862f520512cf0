"""The Learn and Complete dialogs: the specification's labels and defaults, OK and Cancel."""

from __future__ import annotations

import pytest

from napari_learn_complete._qt import dialogs
from napari_learn_complete.engine.settings import CompleteSettings, LearnSettings, Mode

pytestmark = pytest.mark.gui


def _labels_and_values(dialog) -> dict[str, object]:
    """Each named widget's value, by the label the user reads (by name for notes, which have
    none)."""
    return {w.label.strip() or w.name: w.value for w in dialog if w.name}


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
    assert dialogs.ask_complete("scope") == CompleteSettings()
    answers.next(accept=False)
    assert dialogs.ask_complete("scope", from_category=True) is None
    assert answers.seen == ["Learn", "Learn", "Complete", "Complete"]


def test_the_first_learn_offers_the_model_to_create(qtbot, answers) -> None:
    """Without a model, Learn says it creates one, offers its type (the caller's default) and
    trains the full model: a new backbone is untrained."""
    dialog = dialogs.learn_dialog("Learn boxes on 1 selected image(s)", new_model=False)
    qtbot.addWidget(dialog.native)
    assert _labels_and_values(dialog) == {
        "no_model": dialogs.NO_MODEL_YET,
        "Model type": "Boxes (Faster R-CNN)",
        "Nr of training epochs": 10,
        "Training mode": "Full model",
        "mode_note": dialogs.UNTRAINED_NOTE,
        "Size of test data (%)": 0,
    }
    assert dialogs.NO_MODEL_YET.startswith("No model yet: Learn will first create one")
    assert dialogs.learn_settings(dialog) == LearnSettings(epochs=10, mode="full")

    answers.next(edit=lambda d: setattr(d._magic_widget.mode, "value", "Heads only"))
    assert dialogs.ask_first_learn("scope", keypoints=True) == (LearnSettings(mode="heads"), True)
    answers.next(accept=False)
    assert dialogs.ask_first_learn("scope", keypoints=False) is None
