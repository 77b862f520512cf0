"""Learn and Complete from a category card, as a user starts them: the entry chosen in the card's
menu (ROI or Keypoints) decides the kind of the job the panel starts, on that category, with the
dialog's settings; keypoint proposals of "Complete from a category" open in the review.

The jobs go to a recording runner instead of the engine: what is checked is the task the panel
captures, not training (the engine tests cover that)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from napari_learn_complete._qt import index_panel
from napari_learn_complete._qt.review import ReviewWidget
from napari_learn_complete.engine.jobs import Job
from napari_learn_complete.engine.results import Proposal, Proposals, TrainResult
from napari_learn_complete.engine.settings import LearnSettings
from napari_learn_complete.model.registry import create_model
from napari_learn_complete.session import set_default_runner

pytestmark = pytest.mark.gui


class RecordingRunner:
    """Records the jobs it is given and answers each with ``result``, at once."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.jobs: list[Job] = []

    def run(self, job: Job, **_: Any) -> Any:
        self.jobs.append(job)
        return self.result

    def close(self) -> None:
        pass


@pytest.fixture
def keypoint_model(opened):
    """The sample index with a keypoint model (random weights), so both kinds may run."""
    create_model(opened.index, keypoints=True, weights="none", min_size=128)
    return opened


@pytest.fixture
def record(keypoint_model) -> Callable[[Any], RecordingRunner]:
    """``record(result)``: the panel's next jobs go to a new :class:`RecordingRunner` (the
    session takes its runner at its first job; tests/conftest.py puts the default back)."""

    def install(result: Any) -> RecordingRunner:
        runner = RecordingRunner(result)
        set_default_runner(runner)
        return runner

    return install


def _choose(panel, category: str, entry: str) -> None:
    action = next(a for a in panel.category_menu(category).actions() if a.text() == entry)
    assert action.isEnabled(), action.toolTip()
    action.trigger()


@pytest.mark.parametrize(("entry", "kind"), [("Learn (ROI)", "roi"),
                                             ("Learn (Keypoints)", "keypoints")])
def test_learn_from_a_card_learns_the_chosen_kind_on_that_category(
    keypoint_model, record, answers, qtbot, entry: str, kind: str
) -> None:
    panel, index = keypoint_model.panel, keypoint_model.index
    runner = record(TrainResult(run_id=1, version=2, seconds=1.0, losses=[0.5], metrics={},
                                images=4))
    panel.set_active_category("disc")  # the card's category counts, not the active one
    panel.select_images([1])  # nor the selected images
    answers.next(edit=lambda dialog: setattr(dialog._magic_widget.epochs, "value", 3))
    _choose(panel, "triangle", entry)
    qtbot.waitUntil(lambda: not panel.workers)

    assert answers.seen == ["Learn"]
    [job] = runner.jobs  # no image list: the engine trains on every image of the category
    assert job == Job(str(index.path), "learn", {
        "category": "triangle", "kind": kind, "settings": LearnSettings(epochs=3),
    })


def test_complete_keypoints_from_a_card_reviews_keypoint_proposals(
    keypoint_model, record, answers, qtbot
) -> None:
    """Keypoints through the category menu: Complete (Keypoints) on the triangle card proposes
    keypoints of triangles, and those proposals are what the review shows."""
    panel, index, viewer = keypoint_model.panel, keypoint_model.index, keypoint_model.viewer
    drawn = index.observations(category="triangle", kind="keypoints")[0]
    proposal = Proposal(id=0, image_id=9, image_name=index.image(9).name, category="triangle",
                        box=drawn.box, keypoints=tuple(tuple(k) for k in drawn.keypoints),
                        score=0.8, kind="keypoints", model_version="default:v1")
    runner = record(Proposals([proposal]))
    answers.next()
    _choose(panel, "triangle", "Complete (Keypoints)")
    qtbot.waitUntil(lambda: not panel.workers)

    assert answers.seen == ["Complete"]
    [job] = runner.jobs
    assert (job.index, job.operation) == (str(index.path), "propose")
    assert (job.args["category"], job.args["kind"]) == ("triangle", "keypoints")
    assert "images" not in job.args  # the engine looks on the images without a triangle
    [review] = [w for w in viewer.window.dock_widgets.values() if isinstance(w, ReviewWidget)]
    assert review.model.proposals == [proposal]
    assert (review.index, review.category) == (index, "triangle")


def test_complete_roi_from_a_card_proposes_boxes(keypoint_model, record, answers,
                                                 qtbot) -> None:
    """On a category with keypoints, Complete (ROI) still proposes boxes: the entry decides."""
    panel = keypoint_model.panel
    runner = record(Proposals())
    answers.next()
    _choose(panel, "triangle", "Complete (ROI)")
    qtbot.waitUntil(lambda: not panel.workers)
    [job] = runner.jobs
    assert (job.operation, job.args["category"], job.args["kind"]) == (
        "propose", "triangle", "roi")


@pytest.mark.parametrize("found", [0, 1])
def test_complete_from_a_card_names_the_images_it_skipped(keypoint_model, record, answers,
                                                          qtbot, monkeypatch, found) -> None:
    """An image whose file is gone is skipped by the proposals, not silently: the message says
    which, whether or not anything was proposed elsewhere."""
    panel, index = keypoint_model.panel, keypoint_model.index
    shown: list[str] = []
    monkeypatch.setattr(index_panel, "show_info", shown.append)
    drawn = index.observations(category="disc")[0]
    proposals = [Proposal(id=0, image_id=9, image_name=index.image(9).name, category="disc",
                          box=drawn.box, keypoints=None, score=0.8, kind="roi",
                          model_version="default:v1")][:found]
    record(Proposals(proposals, skipped={"sample_004.png": "image file not found: /gone"}))
    answers.next()
    _choose(panel, "disc", "Complete (ROI)")
    qtbot.waitUntil(lambda: not panel.workers)
    [message] = [m for m in shown if "disc" in m]
    assert message.endswith("; skipped 1 image whose file is gone: sample_004.png"), message
