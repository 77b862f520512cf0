"""Starting from torchvision's pretrained weights, offline: stand-in files of the right shapes are
placed in a temporary torch cache under the exact names torchvision looks for, and go through the
real loading path (torchvision's ``get_state_dict``, our checks, the heads re-made)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
from torchvision.models.detection import (
    FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
    KeypointRCNN_ResNet50_FPN_Weights,
    fasterrcnn_mobilenet_v3_large_320_fpn,
    keypointrcnn_resnet50_fpn,
)

from napari_learn_complete.engine.jobs import Job, run_job
from napari_learn_complete.engine.settings import LearnSettings
from napari_learn_complete.engine.train import learn
from napari_learn_complete.errors import BadInputError, BadWeightsError
from napari_learn_complete.model import (
    MODEL_CHOICES,
    ModelConfig,
    active_model,
    build_model,
    create_model,
    load_weights,
)

FAST_COCO = FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1
COCO_NAMES = FAST_COCO.meta["categories"]  # "__background__", "person", ...


def _expected_path(cache: Path, weights) -> Path:
    """Where torchvision itself looks: $TORCH_HOME/hub/checkpoints/<the URL's file name>."""
    return cache / os.path.basename(urlparse(weights.url).path)


def _save(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """A file like torchvision's: FrozenBatchNorm state, so no ``num_batches_tracked``."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


@functools.cache
def _fast_stand_in() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _place_fast(cache: Path) -> dict[str, torch.Tensor]:
    return _save(_fast_stand_in(), _expected_path(cache, FAST_COCO))


def _active_file(index) -> Path:
    handle = active_model(index)
    return handle.version(handle.active_version).file


def _config(**kw) -> ModelConfig:
    kw.setdefault("categories", ["disc", "Cat"])
    return ModelConfig(min_size=96, max_size=96, **kw)


def test_coco_start_loads_the_cached_file_and_remakes_the_class_rows(offline):
    coco = _place_fast(offline)
    state = build_model(_config(), "coco").state_dict()
    kept = [k for k in coco if not k.startswith("roi_heads.box_predictor")]
    assert kept and all(torch.equal(coco[k], state[k]) for k in kept)  # backbone, FPN, RPN, head
    cls = "roi_heads.box_predictor.cls_score.weight"
    assert state[cls].shape[0] == 3  # background, disc, Cat
    cat = COCO_NAMES.index("cat")
    assert torch.equal(state[cls][0], coco[cls][0])  # background kept
    assert torch.equal(state[cls][2], coco[cls][cat])  # "Cat" matches COCO's "cat", any case
    assert torch.equal(state["roi_heads.box_predictor.bbox_pred.weight"][8:12],
                       coco["roi_heads.box_predictor.bbox_pred.weight"][4 * cat:4 * cat + 4])
    assert not any(torch.equal(state[cls][1], row) for row in coco[cls])  # "disc": fresh


def test_coco_weights_keep_torchvisions_box_head_which_they_fill(offline, sample_index):
    _place_fast(offline)
    handle = create_model(sample_index, min_size=96)  # COCO weights by default
    assert handle.config.box_head is None
    assert handle.load()[0].roi_heads.box_head.fc6.out_features == 1024


def test_keypoint_choice_starts_from_keypoint_rcnn_with_its_head_remade(offline):
    torch.manual_seed(2)
    coco = _save(keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict(),
                 _expected_path(offline, KeypointRCNN_ResNet50_FPN_Weights.COCO_V1))
    choice = MODEL_CHOICES["keypoints"]
    config = _config(architecture=choice.architecture, backbone=choice.backbone,
                     categories=["mouse", "person"], keypoint_names=["tail", "nose"])
    state = build_model(config, "coco").state_dict()
    kept = [k for k in coco if not k.startswith(("roi_heads.box_predictor",
                                                  "roi_heads.keypoint_predictor"))]
    assert any(k.startswith("roi_heads.keypoint_head") for k in kept)
    assert all(torch.equal(coco[k], state[k]) for k in kept)
    cls = "roi_heads.box_predictor.cls_score.weight"
    assert state[cls].shape[0] == 3 and torch.equal(state[cls][2], coco[cls][1])  # person
    kps = "roi_heads.keypoint_predictor.kps_score_lowres.weight"
    assert state[kps].shape[1] == 2  # the index's two keypoints, not COCO's 17
    nose = KeypointRCNN_ResNet50_FPN_Weights.COCO_V1.meta["keypoint_names"].index("nose")
    assert torch.equal(state[kps][:, 1], coco[kps][:, nose])  # "nose" keeps its channel
    assert not any(torch.equal(state[kps][:, 0], coco[kps][:, j]) for j in range(17))  # "tail"


def test_imagenet_start_loads_the_backbone_body_only(offline):
    torch.manual_seed(3)
    imagenet = _save(mobilenet_v3_large(weights=None).state_dict(),
                     _expected_path(offline, MobileNet_V3_Large_Weights.IMAGENET1K_V1))
    model = build_model(_config(), "imagenet")
    body = model.backbone.body.state_dict()
    loaded = [k for k in body if not k.endswith("num_batches_tracked")]
    assert loaded and all(torch.equal(body[k], imagenet[f"features.{k}"]) for k in loaded)
    assert not torch.equal(model.state_dict()["rpn.head.conv.0.0.weight"],
                           build_model(_config(), "imagenet", seed=1).state_dict()[
                               "rpn.head.conv.0.0.weight"])  # RPN random, not from the file


def test_offline_creation_names_the_file_and_changes_nothing(offline, sample_index, db_dump):
    before = db_dump(sample_index)
    with pytest.raises(BadInputError) as err:
        create_model(sample_index, min_size=96)  # COCO weights by default
    message = str(err.value)
    expected = _expected_path(offline, FAST_COCO)
    assert expected.name in message and str(expected.parent) in message
    assert FAST_COCO.url in message and "--weights none" in message and "no network" in message
    assert db_dump(sample_index) == before
    assert not list((sample_index.path / "models").iterdir())
    assert not expected.parent.exists() or not list(expected.parent.iterdir())


def test_a_stray_file_under_torchvisions_name_is_refused(offline):
    _save({"backbone.body.0.0.weight": torch.zeros(3)}, _expected_path(offline, FAST_COCO))
    with pytest.raises(BadWeightsError, match=r"does not hold torchvision's .* delete the file"):
        build_model(_config(), "coco")


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bytes, str],
                                                                                   str]]:
    """``serve(content, hash_prefix)``: FAST_COCO's URL pointed at a local HTTP server holding
    ``content`` under torchvision's naming (``name-<sha256 prefix>.pth``)."""
    folder = tmp_path / "server"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def serve(content: bytes, prefix: str) -> str:
        name = f"fasterrcnn_mobilenet_v3_large_320_fpn-{prefix}.pth"
        (folder / name).write_bytes(content)
        url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
        monkeypatch.setattr(FAST_COCO.value, "url", url)
        return name

    yield serve
    server.shutdown()
    server.server_close()


def test_download_fills_torchs_cache_with_progress_through_the_engine_job(
        tmp_path, weight_cache, served, sample_index):
    _save(_fast_stand_in(), tmp_path / "file.pth")
    content = (tmp_path / "file.pth").read_bytes()
    name = served(content, hashlib.sha256(content).hexdigest()[:8])
    events = []
    job = Job(str(sample_index.path), "create_model", {"weights": "coco", "min_size": 96})
    assert run_job(job, progress=events.append) == "default"
    assert (weight_cache / name).read_bytes() == content
    assert {e.stage for e in events} == {"download"} and name in events[-1].message
    assert events[-1].done == events[-1].total == len(content)
    assert [e.done for e in events] == sorted(e.done for e in events)
    _, config, meta = load_weights(_active_file(sample_index))
    assert meta["weights"] == "coco" and config["backbone_trained"] is True
    assert config["backbone_pretrained"] is True


def test_a_damaged_download_is_not_kept(weight_cache, served):
    served(b"not the weights", "0123abcd")
    with pytest.raises(BadInputError, match="is damaged"):
        build_model(_config(), "coco")
    assert not list(weight_cache.iterdir())  # no file, no .partial


def test_heads_only_learn_from_coco_changes_only_the_heads(offline, sample_index):
    _place_fast(offline)
    handle = create_model(sample_index, min_size=96)
    assert handle.config.backbone_trained
    before = load_weights(_active_file(sample_index))[0]
    learn(sample_index, category="disc", settings=LearnSettings(epochs=1, mode="heads"))
    after = load_weights(_active_file(sample_index))[0]
    backbone = [k for k in before if k.startswith("backbone.")]
    heads = [k for k in before if k.startswith(("rpn.", "roi_heads."))]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)  # BN stats too
    assert heads and not all(torch.equal(before[k], after[k]) for k in heads)


def test_backbone_trained_follows_the_start_and_a_full_learn(sample_index):
    handle = create_model(sample_index, weights="none", min_size=96)
    assert not handle.config.backbone_trained
    learn(sample_index, category="disc", settings=LearnSettings(epochs=1, mode="heads"))
    assert not active_model(sample_index).config.backbone_trained
    learn(sample_index, category="disc", settings=LearnSettings(epochs=1, mode="full"))
    handle = active_model(sample_index)
    assert handle.config.backbone_trained
    handle.rollback(1)  # the flag is saved with each version
    assert not active_model(sample_index).config.backbone_trained


def test_version_1_configurations_keep_their_fast_backbone():
    old = {"format_version": 1, "backbone": "mobilenet_v3_large_fpn", "categories": ["a"]}
    assert ModelConfig.from_dict(old).backbone == "mobilenet_v3_large_320_fpn"
    new = {**old, "format_version": 2}
    assert ModelConfig.from_dict(new).backbone == "mobilenet_v3_large_fpn"


def test_the_choices_figures_are_torchvisions():
    from napari_learn_complete.model.pretrained import pretrained_weights

    for choice in MODEL_CHOICES.values():
        config = ModelConfig(architecture=choice.architecture, backbone=choice.backbone,
                             categories=["a"], keypoint_names=["k"] * (
                                 choice.architecture == "keypointrcnn"))
        meta = pretrained_weights(config, "coco").meta
        assert choice.params_m == round(meta["num_params"] / 1e6, 1)
        assert choice.download_mb == round(meta["_file_size"], 1)
        assert choice.coco_map == meta["_metrics"]["COCO-val2017"]["box_map"]


def test_full_learn_on_a_trained_backbone_keeps_its_batchnorm_statistics(offline,
                                                                         sample_index):
    _place_fast(offline)
    create_model(sample_index, min_size=96)
    before = load_weights(_active_file(sample_index))[0]
    learn(sample_index, category="disc", settings=LearnSettings(epochs=1, mode="full"))
    after = load_weights(_active_file(sample_index))[0]
    statistics = [k for k in before if k.startswith("backbone.") and "running_" in k]
    weights = [k for k in before if k.startswith("backbone.") and k.endswith("weight")]
    assert statistics and all(torch.equal(before[k], after[k]) for k in statistics)
    assert not all(torch.equal(before[k], after[k]) for k in weights)  # the backbone learned

    create_model(sample_index, weights="none", min_size=96, name="random")
    before = load_weights(_active_file(sample_index))[0]
    learn(sample_index, category="disc", settings=LearnSettings(epochs=1, mode="full"))
    after = load_weights(_active_file(sample_index))[0]
    assert not all(torch.equal(before[k], after[k]) for k in statistics)  # random: estimated
