"""Learn and Complete started from the Index panel: they run in thread workers while the event loop
keeps going, report progress and outcome, write to the captured target, and can be cancelled and
undone. A tiny random-weight model keeps them fast."""

from __future__ import annotations

import pytest
import torch
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel

from napari_learn_complete._qt import index_panel
from napari_learn_complete._qt.review import ReviewWidget
from napari_learn_complete.model.registry import active_model, create_model

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
    torch.manual_seed(0)
    create_model(opened.index, weights="none", min_size=128)
    return opened


def _trigger(menu, path: str) -> None:
    top, name = path.split("/")
    submenu = next(a.menu() for a in menu.actions() if a.text() == top)
    next(a for a in submenu.actions() if a.text() == name).trigger()


def _one_epoch(dialog) -> None:
    dialog._magic_widget.epochs.value = 1


def test_learn_runs_in_a_worker_with_live_loss(with_model, answers, messages, qtbot,
                                              monkeypatch) -> None:
    panel = with_model.panel
    texts: list[str] = []
    monkeypatch.setattr(panel.status, "setText",
                        lambda t: (texts.append(t), QLabel.setText(panel.status, t)))
    panel.select_images([1, 2, 3])
    panel.set_active_category("disc")
    ticks = []
    timer = QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(bool(panel.workers)))
    timer.start()

    answers.next(edit=_one_epoch)
    _trigger(panel.image_menu(), "ROI/Learn")
    assert answers.seen == ["Learn"]
    assert panel.workers and panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.workers, timeout=WAIT_MS)
    timer.stop()

    assert sum(ticks) > 5, "the event loop stood still while Learn ran"
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
    assert written, messages
    assert {index.category(o.category_id).name for o in written} == {"square"}
    assert {o.image_id for o in written} <= set(targets)
    assert all(o.source == "model" and o.box is not None for o in written)
    assert any(m.startswith(f"Complete wrote {len(written)} observation(s)") for m in messages)
    # The boxes layer shows them (it follows the index's change events).
    ids = {o.id for o in written}
    qtbot.waitUntil(lambda: ids <= set(layers.boxes_layer.features["observation_id"]),
                    timeout=20_000)

    panel.undo_button.click()
    assert {o.id for o in index.observations()} == before
    assert not panel.undo_button.isEnabled()
    qtbot.waitUntil(lambda: not ids & set(layers.boxes_layer.features["observation_id"]))


def test_complete_from_a_category_opens_the_review(with_model, answers, messages, qtbot) -> None:
    panel, index = with_model.panel, with_model.index
    before = index.observations()
    answers.next()
    next(a for a in panel.category_menu("square").actions() if a.text() == "Complete").trigger()
    assert answers.seen == ["Complete"]
    qtbot.waitUntil(lambda: not panel.workers, timeout=WAIT_MS)
    reviews = [w for w in with_model.viewer.window.dock_widgets.values()
               if isinstance(w, ReviewWidget)]
    assert len(reviews) == 1, messages
    proposals = reviews[0].model.proposals
    assert proposals and {p.category for p in proposals} == {"square"}
    square_images = {im.id for im in index.images(category="square")}
    assert not {p.image_id for p in proposals} & square_images
    assert index.observations() == before  # nothing saved before the review


def test_a_refusal_while_capturing_starts_no_job(opened, answers, monkeypatch) -> None:
    """Complete from a category with no model: the error is shown, nothing is left running."""
    errors: list[str] = []
    monkeypatch.setattr(index_panel, "show_error", errors.append)
    answers.next()
    assert opened.panel.complete_category("square") is None
    assert len(errors) == 1 and errors[0].endswith("the index has no model yet; create one "
                                                   "(napari-learn-complete model create INDEX)")
    assert not opened.panel.workers and not opened.panel.cancel_button.isEnabled()
    assert opened.panel.status.text() == ""


def test_progress_lines_say_what_is_done_and_the_time_left() -> None:
    from napari_learn_complete._qt.workers import describe
    from napari_learn_complete.engine.progress import Progress

    assert describe(Progress("learn", 3, 30, "epoch 1/10", epoch=1, epochs=10, loss=0.51234,
                             eta_s=75.4)) == "learn · epoch 1/10 · loss 0.5123 · 1:15 left"
    assert describe(Progress("complete", 50, 50, "200/200 images, 180 written, 0 removed",
                             eta_s=0.0)) == "complete · 200/200 images, 180 written, 0 removed"
    assert describe(Progress("waiting", 0, 0, "waiting for the running job to end")) == \
        "waiting · waiting for the running job to end"
