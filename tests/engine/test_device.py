"""The device a user asks for: a name torch does not know, or a device this machine lacks, is bad
input (exit 2, nothing done), not a crash."""

from __future__ import annotations

import pytest
import torch

from napari_learn_complete.cli import main
from napari_learn_complete.engine.device import choose_device
from napari_learn_complete.errors import BadInputError
from untrained import untrained_model


def test_a_device_name_torch_does_not_know_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"^device: 'bogus' is not a device"):
        choose_device("bogus")
    assert choose_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused() -> None:
    with pytest.raises(BadInputError, match="no CUDA GPU"):
        choose_device("cuda")


def test_the_cli_exits_2_and_changes_nothing(sample_index, db_dump, capsys) -> None:
    untrained_model(sample_index)
    before = db_dump(sample_index)
    assert main(["learn", str(sample_index.path), "--category", "disc", "--device",
                 "bogus"]) == 2
    assert "device: 'bogus' is not a device" in capsys.readouterr().err
    assert db_dump(sample_index) == before
