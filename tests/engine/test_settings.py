"""Learn and Complete settings: the specification's defaults in one place, checked on creation,
and the command line starting from them."""

from __future__ import annotations

import re

import pytest

from napari_learn_complete.cli import build_parser, complete_cmds, learn_cmds
from napari_learn_complete.engine.settings import CompleteSettings, LearnSettings
from napari_learn_complete.errors import BadInputError


def test_the_specification_defaults():
    learn = LearnSettings()
    assert (learn.epochs, learn.mode, learn.test_percent) == (10, "heads", 0.0)
    complete = CompleteSettings()
    assert (complete.min_score, complete.max_detections, complete.remove_existing) == (
        0.0, 1, False)


@pytest.mark.parametrize(("cls", "values", "message"), [
    (LearnSettings, {"epochs": 0}, "epochs: must be greater than or equal to 1, not 0"),
    (LearnSettings, {"epochs": 2.5}, "epochs: must be a valid integer, not 2.5"),
    (LearnSettings, {"mode": "all"}, "mode: must be 'heads' or 'full', not 'all'"),
    (LearnSettings, {"test_percent": 100}, "test_percent: must be less than 100, not 100"),
    (LearnSettings, {"mix_in": -1}, "mix_in: must be greater than or equal to 0, not -1"),
    (LearnSettings, {"epoch": 3}, "epoch: unknown field"),
    (CompleteSettings, {"min_score": 2}, "min_score: must be less than or equal to 1, not 2"),
    (CompleteSettings, {"min_score": float("nan")}, "min_score: must be a finite number, not nan"),
    (CompleteSettings, {"max_detections": 0}, "max_detections: must be greater than or equal to 1"),
    (CompleteSettings, {"remove_existing": "yes"}, "remove_existing: must be a valid boolean"),
])
def test_bad_settings_are_refused_by_name(cls, values, message):
    with pytest.raises(BadInputError) as err:
        cls(**values)
    assert str(err.value).startswith(message)
    settings = cls()
    with pytest.raises(BadInputError, match=re.escape(message.split(",")[0])):
        setattr(settings, *next(iter(values.items())))  # an assignment is checked too
    assert settings == cls()


def _parsed(*argv: str):
    return build_parser().parse_args(list(argv))


def test_the_command_line_defaults_are_the_settings(monkeypatch):
    class OtherLearn(LearnSettings):
        epochs: int = 3
        test_percent: float = 20.0

    class OtherComplete(CompleteSettings):
        min_score: float = 0.5
        max_detections: int = 4
        batch_size: int = 2

    monkeypatch.setattr(learn_cmds, "LearnSettings", OtherLearn)
    monkeypatch.setattr(complete_cmds, "CompleteSettings", OtherComplete)
    learn = _parsed("learn", "ix", "--category", "disc")
    assert (learn.epochs, learn.mode, learn.test_percent) == (3, "heads", 20.0)
    complete = _parsed("complete", "ix", "--images", "a.png", "--category", "disc")
    assert (complete.min_score, complete.max_detections, complete.remove_existing,
            complete.batch_size) == (0.5, 4, False, 2)
    propose = _parsed("propose", "ix", "--category", "disc", "--out", "p.json")
    assert (propose.min_score, propose.max_detections) == (0.5, 4)
