"""napari as a user meets it: a fresh process, the window shown first, then an index opened and
Learn / Complete started through the real menus (tests/gui/napari_user.py). torch must never load
in napari's process: on Mesa (our Xvfb) importing it after the canvas exists segfaults, so these
tests are the ones that catch that crash; the rest of the suite runs jobs in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_learn_complete.actions import NO_MODEL
from napari_learn_complete.sample import make_sample_index
from untrained import untrained_model

pytestmark = pytest.mark.gui
USER = Path(__file__).with_name("napari_user.py")


def napari_user(scenario: str, index: Path) -> dict:
    """Run one scenario in a fresh napari process; what it saw (it must not crash)."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run([sys.executable, str(USER), scenario, str(index)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"napari exited {done.returncode}:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _index_with_model(folder: Path, n_images: int) -> Path:
    """A sample index whose model keeps every detection (tests/untrained.py), so Complete writes
    exactly its maximum per image whatever the tiny random model believes."""
    index = make_sample_index(folder, n_images=n_images, labelled=6, seed=0)
    untrained_model(index)
    index.close()
    return folder


@pytest.mark.slow  # two Learns in the engine process
def test_learn_complete_review_and_undo_through_the_menus(tmp_path: Path,
                                                          process_gone) -> None:
    seen = napari_user("flow", _index_with_model(tmp_path / "index", 12))
    assert seen["torch_loaded"] == []  # napari's process never imported torch
    assert seen["runs"] == [  # image menu, card, review, layer-list menu (undone)
        ["learn", "done"], ["complete", "done"], ["learn", "done"], ["accept", "done"],
        ["complete", "undone"],
    ]
    assert seen["complete_layer_boxes"] == 1  # the image shown gets its box live
    assert seen["proposals"] > 0 and seen["accepted"] == seen["proposals"]
    assert seen["model_boxes"] == 2 + seen["accepted"]  # the layer-menu box was undone
    assert seen["layer_menu_image"] == [11]  # nothing selected: the image the layers show
    assert seen["integrity"] == "ok"
    assert seen["engine_pid"] and process_gone(seen["engine_pid"])  # napari closed: engine stopped
    infos = [s for s in seen["seen"] if s.startswith("info: ")]
    assert any(s.startswith("info: Learn finished on 3 image(s)") for s in infos), seen["seen"]
    assert any("Complete wrote 2 observation(s) with boxes on 2 image(s) into category 'disc'"
               in s for s in infos), seen["seen"]
    assert not [s for s in seen["seen"] if s.startswith("error")], seen["seen"]


def test_killing_the_engine_mid_complete_keeps_napari_and_the_saved_batches(
        tmp_path: Path) -> None:
    seen = napari_user("kill", _index_with_model(tmp_path / "index", 72))
    assert seen["window_visible"] and seen["torch_loaded"] == []
    errors = [s for s in seen["seen"] if s.startswith("error: ")]
    assert len(errors) == 1 and "the engine process died during complete (killed by SIGKILL)" \
        in errors[0], seen["seen"]
    assert seen["runs"] == [["complete", "failed"]]  # recorded, and so undoable
    assert 0 < seen["model_boxes"] < 72  # the batches committed before the kill stay
    assert seen["kept_in_layer"] == seen["model_boxes_shown"] == 1  # the image shown
    assert seen["undo_enabled"]
    assert seen["integrity"] == "ok"


@pytest.mark.slow  # a model made and a Learn in the engine process
def test_the_sample_index_runs_the_loop_from_the_gui(tmp_path: Path) -> None:
    """File > Open Sample gives an index without a model: Complete says why it cannot run, the
    first Learn offers the model to create and makes it, then Complete runs; no console."""
    seen = napari_user("sample", tmp_path)
    assert seen["torch_loaded"] == []
    assert seen["complete_before"] == [False, NO_MODEL]
    assert seen["first_learn_offers"] == ["fast", True, "COCO (torchvision, downloaded once)",
                                          "Heads only"]
    assert seen["models"] == [["default", 2]]  # created (version 1), then learned (version 2)
    assert seen["runs"] == [["learn", "done"], ["complete", "done"]]
    assert seen["integrity"] == "ok"
    assert not [s for s in seen["seen"] if s.startswith("error")], seen["seen"]


def test_the_napari_side_never_imports_torch() -> None:
    """Everything napari imports from us (reader, writer, sample data, widgets, menus, palette
    commands, console API, controller) stays free of torch."""
    modules = ["napari_learn_complete", "napari_learn_complete._napari.reader",
               "napari_learn_complete._napari.writer", "napari_learn_complete._napari.sample_data",
               "napari_learn_complete._napari.menus", "napari_learn_complete._qt.index_panel",
               "napari_learn_complete._qt.model_panel", "napari_learn_complete._qt.review",
               "napari_learn_complete._qt.commands", "napari_learn_complete.api",
               "napari_learn_complete.session"]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "import napari_learn_complete as n; n.learn, n.Index, n.EngineError\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'triton') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == "[]"
