"""An index without a model (the sample from File > Open Sample) on the real viewer: the first
Learn offers the model to create, creates it in the engine and then learns; Cancel, failures
and refusals end cleanly (no job left, no "starting..."); error toasts put the reason first."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from napari_learn_complete._qt import dialogs, index_panel
from napari_learn_complete.engine.jobs import InProcessRunner, Job
from napari_learn_complete.engine.progress import Progress
from napari_learn_complete.engine.results import TrainResult
from napari_learn_complete.engine.scope import learn_scope
from napari_learn_complete.errors import RefusedError
from napari_learn_complete.model.registry import active_model, create_model
from napari_learn_complete.session import set_default_runner

pytestmark = pytest.mark.gui
NO_MODEL = "No model yet: run Learn (it offers to create one) or create one in the Model panel"
LEARNED = TrainResult(run_id=1, version=2, seconds=1.0, losses=[0.5], metrics={}, images=1,
                      notes=["1 image: nothing held out for testing"])


@pytest.fixture
def shown(monkeypatch) -> dict[str, list[str]]:
    """The notifications the panel (and its workers) show: "info" and "error"."""
    seen: dict[str, list[str]] = {"info": [], "error": []}
    for kind, messages in seen.items():
        monkeypatch.setattr(index_panel, f"show_{kind}", messages.append)
        monkeypatch.setattr(f"napari_learn_complete._qt.workers.show_{kind}", messages.append)
    return seen


class Runner(InProcessRunner):
    """Creates models for real (held at ``release`` once started, when ``hold``); records the
    operations; Learn answers ``LEARNED`` at once, or raises ``fail``."""

    def __init__(self, *, hold: bool = False, fail: Exception | None = None) -> None:
        self.operations: list[str] = []
        self.args: list[dict[str, Any]] = []  # each job's, in order
        self.started, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        self.fail = fail

    def run(self, job: Job, **kwargs: Any) -> Any:
        self.operations.append(job.operation)
        self.args.append(job.args)
        if self.fail is not None:
            raise self.fail
        if job.operation != "create_model":
            return LEARNED
        self.started.set()
        self.release.wait(30)
        return super().run(job, **kwargs)


RANDOM = "Random (offline, learns slowly)"


def _first_learn_answer(seen: dict[str, Any], weights: str = RANDOM, keypoints: bool = False):
    """Answer the first Learn's dialog: note what it offers (the notes only when shown), choose
    ``weights`` and ``keypoints`` on the fast model, 1 epoch."""

    def edit(dialog) -> None:
        widgets = dialog._magic_widget

        def note() -> str | None:
            return widgets.mode_note.value if widgets.mode_note.visible else None

        seen.update({name: getattr(widgets, name).value
                     for name in ("no_model", "model_choice", "keypoints", "weights", "mode")})
        seen["mode_note"] = note()
        widgets.weights.value = weights
        widgets.keypoints.value = keypoints
        seen["mode chosen"], seen["note chosen"] = widgets.mode.value, note()  # as the start made
        widgets.epochs.value = 1

    return edit


@pytest.mark.slow  # a Learn of 1 epoch on 2 tiny images, in process
def test_the_first_learn_creates_a_model_then_learns(opened, answers, shown, qtbot) -> None:
    panel, index = opened.panel, opened.index
    panel.select_images([1, 2])
    offered: dict[str, Any] = {}
    answers.next(edit=_first_learn_answer(offered))
    learn = next(a for a in panel.image_menu().actions() if a.text() == "ROI").menu().actions()[0]
    assert learn.text() == "Learn" and learn.isEnabled(), learn.toolTip()
    learn.trigger()
    qtbot.waitUntil(lambda: not panel.workers, timeout=240_000)

    assert offered == {  # the sample has a category with keypoints: keypoints first
        "no_model": dialogs.NO_MODEL_YET, "model_choice": "fast", "keypoints": True,
        "weights": "COCO (torchvision, downloaded once)", "mode": "Heads only", "mode_note": None,
        "mode chosen": "Full model", "note chosen": dialogs.UNTRAINED_NOTE,  # from random weights
    }
    assert "No model yet: Learn will first create one" in dialogs.NO_MODEL_YET
    assert not shown["error"], shown
    model = active_model(index)
    assert (model.name, model.config.architecture) == ("default", "fasterrcnn")
    [run] = [r for r in index.runs.list() if r.operation == "learn"]
    assert run.status == "done"
    assert any(m.startswith("Learn finished on 2 image(s)") for m in shown["info"]), shown
    assert panel.status.text() == "" and not panel.cancel_button.isEnabled()


def test_the_learn_dialog_offers_the_epochs_for_the_scope_and_the_model(opened, answers) -> None:
    """The dialog's epochs advice (docs/learn.md) counts the Learn's own scope and follows the
    model: 200 steps before the first Full Learn from random weights, 100 after, none from
    COCO weights."""
    panel, index = opened.panel, opened.index
    offers: list[str | None] = []

    def note(dialog) -> None:
        button = dialog._magic_widget.use_epochs
        offers.append(button.text if button.visible else None)

    panel.select_images([1, 2])  # one step of 4 an epoch
    answers.next(accept=False, edit=note)
    panel.learn_images("roi")  # no model yet: random weights chosen, the first Learn's 200
    answers.next(accept=False, edit=lambda d: (
        setattr(d._magic_widget.weights, "value", RANDOM), note(d)))
    panel.learn_images("roi")
    handle = create_model(index, weights="none")
    discs = len(learn_scope(index, category="disc"))
    answers.next(accept=False, edit=note)
    panel.learn_category("disc", "roi")
    handle.config.replace(backbone_trained=True).save(handle.folder / "config.json")
    answers.next(accept=False, edit=note)
    panel.learn_category("disc", "roi")
    steps_an_epoch = -(-discs // handle.config.training.batch_size)
    assert offers == [
        None,  # the first Learn's dialog starts on COCO weights
        "Use 200 epochs: about 200 optimizer steps",
        f"Use {-(-200 // steps_an_epoch)} epochs: about 200 optimizer steps",
        f"Use {-(-100 // steps_an_epoch)} epochs: about 100 optimizer steps",
    ]


def test_cancel_while_the_model_is_made_stops_before_learn(opened, answers, shown,
                                                            qtbot) -> None:
    panel, index = opened.panel, opened.index
    runner = Runner(hold=True)
    set_default_runner(runner)
    panel.select_images([1])
    answers.next(edit=_first_learn_answer({}))
    panel.learn_images("roi")
    qtbot.waitUntil(runner.started.is_set)
    assert panel.cancel_button.isEnabled()
    panel.cancel()
    runner.release.set()
    qtbot.waitUntil(lambda: not panel.workers)

    assert runner.operations == ["create_model"]  # made (it cannot stop midway), no Learn
    assert index.models.active() is not None
    assert panel.status.text() == "" and not panel.cancel_button.isEnabled()


def test_the_learn_follows_the_model_and_says_its_notes(opened, answers, shown,
                                                        qtbot) -> None:
    panel, index = opened.panel, opened.index
    runner = Runner()
    set_default_runner(runner)
    answers.next(edit=_first_learn_answer({}))
    panel.learn_category("disc", "roi")
    qtbot.waitUntil(lambda: not panel.workers)
    assert runner.operations == ["create_model", "learn"]
    assert any("1 image: nothing held out for testing" in m for m in shown["info"]), shown

    answers.next(accept=False)  # a model exists now: the plain Learn dialog; Cancel: no job
    panel.learn_category("disc", "roi")
    assert runner.operations == ["create_model", "learn"] and not panel.workers
    assert answers.seen == ["Learn", "Learn"]
    assert [r.name for r in index.models.list()] == ["default"]


def test_the_model_is_created_as_chosen_then_learns(opened, answers, shown, qtbot) -> None:
    """The first Learn's dialog starts at COCO weights and Heads only; Random switches to Full
    model with the note why; the model is created with what the dialog says."""
    panel, index = opened.panel, opened.index
    runner = Runner()
    set_default_runner(runner)
    offered: dict[str, Any] = {}
    answers.next(edit=_first_learn_answer(offered, keypoints=True))
    panel.learn_category("disc", "roi")
    qtbot.waitUntil(lambda: not panel.workers)
    assert offered["weights"] == "COCO (torchvision, downloaded once)"
    assert (offered["mode"], offered["mode_note"]) == ("Heads only", None)
    assert (offered["mode chosen"], offered["note chosen"]) == ("Full model",
                                                                dialogs.UNTRAINED_NOTE)
    assert runner.operations == ["create_model", "learn"]
    create, learn = runner.args
    assert create == {"choice": "fast", "keypoints": True, "weights": "none", "name": "default"}
    assert learn["settings"].mode == "full"
    config = active_model(index).config
    assert (config.architecture, config.backbone) == ("keypointrcnn", "mobilenet_v3_large_320_fpn")
    assert not shown["error"], shown


def test_coco_weights_offline_stop_before_learn(opened, answers, shown, qtbot,
                                                offline) -> None:
    """The default start (COCO) reaches the engine; offline it fails saying what to do, and no
    model is made and no Learn runs."""
    panel, index = opened.panel, opened.index
    runner = Runner()
    set_default_runner(runner)
    answers.next(edit=_first_learn_answer({}, weights="COCO (torchvision, downloaded once)"))
    panel.learn_category("disc", "roi")
    qtbot.waitUntil(lambda: not panel.workers)
    assert runner.operations == ["create_model"]
    assert runner.args[0]["weights"] == "coco" and runner.args[0]["choice"] == "fast"
    [error] = shown["error"]
    assert error.startswith("Create model 'default': torchvision's pretrained weights are not")
    assert "'Random' in the Model panel" in error
    assert index.models.active() is None


def test_heads_only_on_a_backbone_never_trained_is_warned(opened, answers, qtbot) -> None:
    """The Learn dialog reads the active model's configuration: a random start with no Full
    model Learn yet gets the note (the user's Heads only still goes); a trained backbone none."""
    panel, index = opened.panel, opened.index
    handle = create_model(index, weights="none")
    runner = Runner()
    set_default_runner(runner)
    notes: list[str | None] = []

    def note(dialog) -> None:
        widgets = dialog._magic_widget
        notes.append(widgets.mode_note.value if widgets.mode_note.visible else None)

    answers.next(edit=note)
    panel.learn_category("disc", "roi")
    qtbot.waitUntil(lambda: not panel.workers)
    assert notes == [dialogs.HEADS_ON_UNTRAINED]
    assert runner.operations == ["learn"] and runner.args[0]["settings"].mode == "heads"

    model, config = handle.load()  # as after a Full model Learn
    handle.commit_version(model, config.replace(backbone_trained=True))
    answers.next(edit=note, accept=False)
    panel.learn_category("disc", "roi")
    assert notes == [dialogs.HEADS_ON_UNTRAINED, None]


def test_cancel_in_the_first_learn_dialog_creates_nothing(opened, answers, qtbot) -> None:
    panel, index = opened.panel, opened.index
    runner = Runner()
    set_default_runner(runner)
    panel.select_images([1])
    answers.next(accept=False)
    assert panel.learn_images("roi") is None
    assert runner.operations == [] and not panel.workers
    assert index.models.active() is None


def test_complete_from_a_category_without_model_is_refused_cleanly(opened, shown,
                                                                   monkeypatch) -> None:
    """Called directly (as the command palette or a script does): refused with the way out,
    before any dialog; no job, nothing left "starting..."."""
    panel = opened.panel
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "ask_complete", lambda scope, **_: asked.append(scope))
    assert panel.complete_category("disc", "roi") is None
    assert asked == [] and panel.workers == []
    assert panel.status.text() == "" and not panel.cancel_button.isEnabled()
    assert shown["info"] == [NO_MODEL]


def test_errors_put_the_reason_first(opened, answers, shown, qtbot) -> None:
    """Messages of the core name the index first: a toast cut short must still show why."""
    panel, index = opened.panel, opened.index
    create_model(index, weights="none")
    set_default_runner(Runner(fail=RefusedError(f"{index.path}: no image of the scope has a "
                                                "box to learn from")))
    panel.select_images([1])
    answers.next()
    panel.learn_images("roi")
    qtbot.waitUntil(lambda: not panel.workers)
    assert shown["error"] == [
        f"Learn (ROI): no image of the scope has a box to learn from ({index.path})"]


class Reporting(InProcessRunner):
    """Reports one epoch's progress as the engine does, then holds the job until ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(self, job: Job, *, progress=None, **_: Any) -> Any:
        progress(Progress("learn", 1, 4, message="epoch 1/2", epoch=1, epochs=2, loss=0.5))
        self.release.wait(30)
        return LEARNED


def test_the_status_names_the_epoch_once(opened, answers, qtbot) -> None:
    panel = opened.panel
    create_model(opened.index, weights="none")
    runner = Reporting()
    set_default_runner(runner)
    panel.select_images([1])
    answers.next()
    panel.learn_images("roi")
    try:
        qtbot.waitUntil(lambda: "loss" in panel.status.text())
        assert panel.status.text() == "Learn (ROI): epoch 1/2 · loss 0.5000"
    finally:
        runner.release.set()
    qtbot.waitUntil(lambda: not panel.workers)
    assert panel.status.text() == ""
