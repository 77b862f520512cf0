"""The command line's one progress reporter: tqdm bars on stderr, stdout left to the summary."""

from __future__ import annotations

import re

from napari_learn_complete.cli import ProgressBar
from napari_learn_complete.engine.progress import Progress


def test_one_finished_bar_per_stage_on_stderr_and_nothing_on_stdout(capsys):
    with ProgressBar() as progress:
        progress(Progress("starting", 0, 0, "starting the engine process"))  # no count yet
        for done in (1, 2, 3):
            progress(Progress("learn", done, 3, "epoch 1/1", epoch=1, epochs=1, loss=0.5 / done))
        progress(Progress("complete", 1, 2, "2/4 images, 1 written, 0 removed"))
        progress(Progress("complete", 2, 2, "4/4 images, 2 written, 0 removed"))
        progress(Progress("complete", 1, 1, "1/1 images, 0 written, 0 removed"))  # counts again
    out, err = capsys.readouterr()
    assert out == ""
    finished = [line.rsplit("\r", 1)[-1] for line in err.split("\n")[:-1]]  # each bar's end
    assert len(finished) == 4, err
    assert re.fullmatch(r"starting: 0step \[.*, starting the engine process\]", finished[0])
    assert re.fullmatch(r"learn: 100%\|.*\| 3/3 \[.*, epoch 1/1, loss 0\.1667\]", finished[1])
    assert re.fullmatch(r"complete: 100%\|.*\| 2/2 \[.*, 4/4 images, 2 written, 0 removed\]",
                        finished[2])
    assert re.fullmatch(r"complete: 100%\|.*\| 1/1 \[.*, 1/1 images, 0 written, 0 removed\]",
                        finished[3])
