"""Learn and Complete started from the Index panel: they run in thread workers while the event loop
keeps going, report progress and outcome, write to the captured target (index and category), and
can be cancelled and undone. A tiny random-weight model that keeps every detection keeps them fast
and their results exact (tests/untrained.py)."""

from __future__ import annotations

import threading

import pytest
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import QLabel

from doubles import ScriptedDetector
from napari_learn_complete._napari.layers import index_layers, open_index
from napari_learn_complete._qt import index_panel
from napari_learn_complete._qt.review import ReviewWidget
from napari_learn_complete.engine.detections import Detection
from napari_learn_complete.engine.jobs import InProcessRunner
from napari_learn_complete.engine.predict import Predictor
from napari_learn_complete.model.registry import active_model, create_model
from napari_learn_complete.sample import make_sample_index
from napari_learn_complete.session import set_default_runner
from untrained import untrained_model

pytestmark = pytest.mark.gui
WAIT_MS = 240_000  # a shared 2-core machine trains slowly


@pytest.fixture
def messages(monkeypatch) -> list[str]:
    """The info notifications the panel shows (outcomes, cancellations)."""
    shown: list[str] = []
    monkeypatch.setattr(index_panel, "show_info", shown.append)
    monkeypatch.setattr("napari_learn_complete._qt.workers.show_info", shown.append)
    return shown


@pytest.fixture
def with_model(opened):
    untrained_model(opened.index)
    return opened


class _MainThread(QObject):
    """Runs the callables posted to it, from any thread, in the main thread's event loop."""

    posted = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.posted.connect(self._call, Qt.ConnectionType.QueuedConnection)

    def _call(self, fn) -> None:
        fn()


class EventLoopCheck(InProcessRunner):
    """Runs jobs in process; at a job's first progress report the job waits (up to a minute)
    until the main thread's event loop has run a call posted from it. ``kept_going`` tells
    whether it did while the job was mid-way (None: no progress report yet)."""

    def __init__(self) -> None:
        self.main_thread = _MainThread()
        self.kept_going: bool | None = None

    def run(self, job, *, progress=None, cancel=None, changed=None):
        def checked(event) -> None:
            if self.kept_going is None:
                reached = threading.Event()
                self.main_thread.posted.emit(reached.set)
                self.kept_going = reached.wait(timeout=60)
            if progress is not None:
                progress(event)

        return super().run(job, progress=checked, cancel=cancel, changed=changed)


def _trigger(menu, path: str) -> None:
    top, name = path.split("/")
    submenu = next(a.menu() for a in menu.actions() if a.text() == top)
    next(a for a in submenu.actions() if a.text() == name).trigger()


def _one_epoch(dialog) -> None:
    dialog._magic_widget.epochs.value = 1


def test_learn_runs_in_a_worker_with_live_loss(with_model, answers, messages, qtbot,
                                              monkeypatch) -> None:
    panel = with_model.panel
    event_loop = EventLoopCheck()
    set_default_runner(event_loop)  # the panel's session has not run anything yet
    texts: list[str] = []
    monkeypatch.setattr(panel.status, "setText",
                        lambda t: (texts.append(t), QLabel.setText(panel.status, t)))
    panel.select_images([1, 2, 3])
    panel.set_active_category("disc")

    answers.next(edit=_one_epoch)
    _trigger(panel.image_menu(), "ROI/Learn")
    assert answers.seen == ["Learn"]
    assert panel.workers and panel.cancel_button.isEnabled()  # the menu returned; Learn runs on
    qtbot.waitUntil(lambda: not panel.workers, timeout=WAIT_MS)

    assert event_loop.kept_going, "the event loop stood still while Learn ran"
    assert any("loss" in t for t in texts), texts
    assert active_model(with_model.index).active_version == 2
    assert any(m.startswith("Learn finished on 3 image(s)") for m in messages), messages
    assert not panel.cancel_button.isEnabled()


def test_learn_can_be_cancelled(with_model, answers, messages, qtbot) -> None:
    panel = with_model.panel
    panel.select_images([1, 2, 3, 4])
    answers.next(edit=lambda d: setattr(d._magic_widget.epochs, "value", 500))
    worker = panel.learn_images("roi")
    qtbot.waitUntil(lambda: "epoch" in panel.status.text(), timeout=WAIT_MS)
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: not panel.workers, timeout=WAIT_MS)
    assert worker.abort_requested
    assert "Learn (ROI) cancelled" in messages
    assert active_model(with_model.index).active_version == 1


def test_complete_writes_to_the_captured_target_and_undo(with_model, answers, messages,
                                                         qtbot) -> None:
    panel, index, layers = with_model.panel, with_model.index, with_model.layers
    targets = [7, 8, 9]
    panel.select_images(targets)
    panel.set_active_category("square")
    before = {o.id for o in index.observations()}

    answers.next()
    _trigger(panel.image_menu(), "ROI/Complete")
    assert answers.seen == ["Complete"]
    # The user moves on while Complete runs: another category, another layer, other images.
    panel.set_active_category("disc")
    with_model.viewer.add_points([[0, 1, 1]], name="elsewhere")
    panel.select_images([1])
    qtbot.waitUntil(lambda: not panel.workers, timeout=WAIT_MS)

    written = [o for o in index.observations() if o.id not in before]
    assert sorted(o.image_id for o in written) == targets, messages  # its best box on each
    assert {index.category(o.category_id).name for o in written} == {"square"}
    assert all(o.source == "model" and o.box is not None for o in written)
    assert {o.run_id for o in written} == {panel.session.last_run[1]}
    assert any(m.startswith("Complete wrote 3 observation(s) with boxes on 3 image(s) into "
                            "category 'square'") for m in messages), messages
    # The boxes layer shows them on their image (it follows the index's change events).
    ids = {o.id for o in written if o.image_id == targets[0]}
    layers.show_image(targets[0])
    qtbot.waitUntil(lambda: ids <= set(layers.boxes_layer.features["observation_id"]),
                    timeout=20_000)

    panel.undo_button.click()
    assert {o.id for o in index.observations()} == before
    assert not panel.undo_button.isEnabled()
    qtbot.waitUntil(lambda: not ids & set(layers.boxes_layer.features["observation_id"]))


class GatedDetector(ScriptedDetector):
    """Scripted detections, given only once the test sets ``go``: ``entered`` tells it the run
    is under way (a minute without ``go`` fails the run)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.entered, self.go = threading.Event(), threading.Event()

    def predict(self, images):
        self.entered.set()
        if not self.go.wait(timeout=60):
            raise TimeoutError("the test never let the detector go on")
        return super().predict(images)


def test_complete_keeps_the_captured_index_when_another_is_opened(
        make_napari_viewer, tmp_path, answers, messages, qtbot, monkeypatch, db_dump) -> None:
    first = make_sample_index(tmp_path / "first", n_images=12, labelled=6, seed=0)
    second = make_sample_index(tmp_path / "second", n_images=12, labelled=6, seed=0)  # alike
    create_model(first, weights="none", min_size=128)  # Complete needs one; the detector answers
    box = (10.0, 12.0, 40.0, 44.0)
    targets = ["sample_006.png", "sample_007.png", "sample_008.png"]
    detector = GatedDetector(first, {n: [Detection("square", box, 0.8)] for n in targets})
    monkeypatch.setattr(Predictor, "from_index", classmethod(lambda cls, *a, **k: detector))
    viewer = make_napari_viewer()
    first_layers = open_index(viewer, first)
    panel = index_panel.index_panel(viewer)  # docked as the Plugins menu docks it
    panel.select_images([first.image(n).id for n in targets])
    panel.set_active_category("square")

    answers.next()
    _trigger(panel.image_menu(), "ROI/Complete")
    try:
        qtbot.waitUntil(detector.entered.is_set, timeout=60_000)  # running on the first index
        viewer.open(str(second.path), plugin="napari-learn-complete")  # the user opens another
        second_layers = index_layers(viewer)[-1]
        viewer.layers.selection.active = second_layers.boxes_layer  # and works on it
        qtbot.waitUntil(lambda: panel.layers is second_layers)  # the panel shows it now
        panel.set_active_category("disc")
        panel.select_images([1])
        untouched = db_dump(second)
    finally:
        detector.go.set()
    qtbot.waitUntil(lambda: not panel.workers, timeout=WAIT_MS)

    written = first.observations(source="model")
    assert sorted((first.image(o.image_id).name, o.box, o.score) for o in written) == [
        (name, box, 0.8) for name in targets], messages
    assert {first.category(o.category_id).name for o in written} == {"square"}
    assert db_dump(second) == untouched
    assert second.observations(source="model") == []
    # the first index's layers show them on their image, the second's do not
    ids = {o.id for o in written if o.image_id == first.image(targets[0]).id}
    first_layers.show_image(first.image(targets[0]).id)
    qtbot.waitUntil(lambda: ids <= set(first_layers.boxes_layer.features["observation_id"]))
    assert "model" not in set(second_layers.boxes_layer.features["source"])
    assert panel.session.last_run[0].path == first.path  # Undo takes back that run
    assert any(m.startswith("Complete wrote 3 observation(s) with boxes on 3 image(s) into "
                            "category 'square'") for m in messages), messages


def test_complete_from_a_category_opens_the_review(with_model, answers, messages, qtbot) -> None:
    panel, index = with_model.panel, with_model.index
    before = index.observations()
    answers.next()
    next(a for a in panel.category_menu("square").actions()
         if a.text() == "Complete (ROI)").trigger()
    assert answers.seen == ["Complete"]
    qtbot.waitUntil(lambda: not panel.workers, timeout=WAIT_MS)
    reviews = [w for w in with_model.viewer.window.dock_widgets.values()
               if isinstance(w, ReviewWidget)]
    assert len(reviews) == 1, messages
    proposals = reviews[0].model.proposals
    # the images of the other categories that have no square (the spec's rule)
    square_images = {im.id for im in index.images(category="square")}
    others = sorted({o.image_id for o in index.observations()} - square_images)
    assert sorted(p.image_id for p in proposals) == others  # the best one on each
    assert {p.category for p in proposals} == {"square"}
    assert index.observations() == before  # nothing saved before the review


def test_progress_lines_say_what_is_done_and_the_time_left() -> None:
    from napari_learn_complete._qt.workers import describe
    from napari_learn_complete.engine.progress import Progress

    assert describe(Progress("learn", 3, 30, "epoch 1/10", epoch=1, epochs=10, loss=0.51234,
                             eta_s=75.4)) == "learn · epoch 1/10 · loss 0.5123 · 1:15 left"
    assert describe(Progress("complete", 50, 50, "200/200 images, 180 written, 0 removed",
                             eta_s=0.0)) == "complete · 200/200 images, 180 written, 0 removed"
    assert describe(Progress("waiting", 0, 0, "waiting for the running job to end")) == \
        "waiting · waiting for the running job to end"


def test_remove_existing_keeps_a_box_and_its_keypoints_one_observation(
        opened, answers, messages, qtbot, monkeypatch) -> None:
    """ROI Complete with "Remove existing first" on an image whose triangle has a box and
    keypoints: the new box replaces the old one in that observation (the keypoints are not left
    on a box-less observation), the counts say 1 written and 1 removed, and undo puts it back."""
    panel, index, layers = opened.panel, opened.index, opened.layers
    (triangle,) = index.observations(images=[1], category="triangle")
    x0, y0, x1, y1 = triangle.box
    found = (x0 + 1, y0 + 1, x1 + 1, y1 + 1)
    create_model(index, weights="none", min_size=128)  # Complete needs one; the detector answers
    detector = ScriptedDetector(index, {"sample_000.png": [Detection("triangle", found, 0.9)]},
                                kinds=("roi",))
    monkeypatch.setattr(Predictor, "from_index", classmethod(lambda cls, *a, **k: detector))
    panel.set_active_category("triangle")
    panel.select_images([1])

    answers.next(edit=lambda d: setattr(d._magic_widget.remove_existing, "value", True))
    _trigger(panel.image_menu(), "ROI/Complete")
    qtbot.waitUntil(lambda: not panel.workers, timeout=WAIT_MS)

    (after,) = index.observations(images=[1], category="triangle")
    assert after.id == triangle.id and after.box == found and after.source == "model"
    assert after.keypoints == triangle.keypoints
    assert any(m.startswith("Complete wrote 1 observation(s) with boxes on 1 image(s)")
               and "removed 1" in m for m in messages), messages
    layers.show_image(1)
    qtbot.waitUntil(lambda: list(layers.boxes_layer.features["observation_id"])
                    == [triangle.id])
    assert set(layers.keypoints_layer.features["observation_id"]) == {triangle.id}

    panel.undo_button.click()
    assert index.observations(images=[1]) == [triangle]
