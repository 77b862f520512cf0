"""Learn and the full training run: one trainer, the Learn overrides, refusals, records, cancel."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from napari_learn_complete.engine.progress import Progress
from napari_learn_complete.engine.train import LearnSettings, learn, make_scheduler, train
from napari_learn_complete.errors import Cancelled, RefusedError
from napari_learn_complete.model import active_model, backbone_parameters, create_model
from napari_learn_complete.model.build import load_weights
from napari_learn_complete.model.config import Augment, TrainingSettings

SCOPE = ["sample_000.png", "sample_001.png", "sample_003.png", "sample_005.png"]


def _model(index, *, keypoints=False, purpose="locate", **training):
    """A small, fast model (96 px) whose training settings are edited like a user would."""
    handle = create_model(index, weights="none", keypoints=keypoints, purpose=purpose, min_size=96)
    settings = {"batch_size": 2, "warmup_iters": 1,
                "augment": Augment(scale_jitter=(1.0, 1.0), color_jitter=0.0), **training}
    config = handle.config.replace(training=handle.config.training.replace(**settings))
    config.save(handle.folder / "config.json")
    return active_model(index)


def _weights(handle, number):
    return load_weights(handle.version(number).file)[0]


def _backbone_names(handle):
    return [name for name, _ in backbone_parameters(handle.load()[0])]


def _run(index, run_id):
    [row] = index.query("SELECT * FROM runs WHERE id = ?", (run_id,))
    return row


def test_heads_only_keeps_backbone_bit_identical_and_full_changes_it(sample_index):
    handle = _model(sample_index)
    names = _backbone_names(handle)
    heads = learn(sample_index, images=SCOPE, settings=LearnSettings(epochs=1))
    full = learn(sample_index, images=SCOPE, settings=LearnSettings(epochs=1, mode="full"))
    assert (heads.version, full.version) == (2, 3)
    v1, v2, v3 = (_weights(handle, n) for n in (1, 2, 3))
    assert all(torch.equal(v1[name], v2[name]) for name in names)
    assert not all(torch.equal(v2[name], v3[name]) for name in names)
    # Heads did train, and BatchNorm statistics of the frozen backbone stayed as they were.
    assert not torch.equal(v1["roi_heads.box_predictor.cls_score.weight"],
                           v2["roi_heads.box_predictor.cls_score.weight"])
    stats = [k for k in v1 if k.startswith("backbone.") and k.endswith("running_mean")]
    assert stats and all(torch.equal(v1[k], v2[k]) for k in stats)


def test_a_random_backbone_reestimates_its_batchnorm_statistics_in_every_full_learn(
        sample_index):
    """Kept after the first Full Learn, statistics estimated on a barely trained random backbone
    made the next Learn diverge (docs/learn.md); only pretrained statistics are kept."""
    handle = _model(sample_index)
    for _ in range(2):
        learn(sample_index, images=SCOPE, settings=LearnSettings(epochs=1, mode="full"))
    config = active_model(sample_index).config
    assert config.backbone_trained and not config.backbone_pretrained
    v2, v3 = _weights(handle, 2), _weights(handle, 3)
    stats = [k for k in v2 if k.startswith("backbone.") and k.endswith("running_mean")]
    assert stats and not any(torch.equal(v2[k], v3[k]) for k in stats)


def test_learn_uses_cosine_decay_and_patience_zero_whatever_the_model_says(sample_index):
    _model(sample_index, lr_decay="step", patience=7, learning_rate=0.01)
    events: list[Progress] = []
    result = learn(sample_index, images=SCOPE, settings=LearnSettings(epochs=3),
                   progress=events.append)
    lrs = [e.lr for e in events]
    total, warmup = len(lrs), 1  # 3 epochs x 2 steps; warm-up capped at a fifth of the run
    assert total == 6 and [e.done for e in events] == list(range(1, 7))
    assert lrs[0] < 0.01 * 0.01  # warming up
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))
                for t in range(warmup, total)]
    assert lrs[warmup:] == pytest.approx(expected)  # a step decay would stay at 0.01 here
    settings = json.loads(_run(sample_index, result.run_id)["settings"])
    assert settings["training"]["lr_decay"] == "cosine"
    assert settings["training"]["patience"] == 0
    assert [(e.epoch, e.epochs) for e in events][::2] == [(1, 3), (2, 3), (3, 3)]
    assert events[-1].eta_s == 0 and all(e.loss is not None and e.stage == "learn"
                                         for e in events)


def test_scheduler_kinds():
    param = torch.nn.Parameter(torch.zeros(1))

    def lrs(decay, total=12, per_epoch=2):
        config = TrainingSettings(lr_decay=decay, warmup_iters=0)
        optimizer = torch.optim.SGD([param], lr=1.0)
        scheduler = make_scheduler(optimizer, config, total, per_epoch)
        out = []
        for _ in range(total):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    assert lrs("constant") == [1.0] * 12
    assert lrs("step") == pytest.approx([1.0] * 6 + [0.1] * 6)  # x0.1 every 3 epochs
    cosine = lrs("cosine")
    assert cosine[0] == 1.0 and all(a > b for a, b in itertools.pairwise(cosine))


def test_learn_starts_from_the_current_version(sample_index):
    handle = _model(sample_index)
    names = _backbone_names(handle)
    learn(sample_index, images=SCOPE, settings=LearnSettings(epochs=1, mode="full"))  # v2
    handle.rollback(1)
    result = learn(sample_index, images=SCOPE, settings=LearnSettings(epochs=1))  # heads only
    handle = active_model(sample_index)
    assert result.version == 3 and handle.active_version == 3
    assert handle.version(3).parent == 1
    v1, v2, v3 = (_weights(handle, n) for n in (1, 2, 3))
    # The frozen backbone of v3 is v1's, so training started from v1's tensors, not v2's.
    assert all(torch.equal(v1[name], v3[name]) for name in names)
    assert not all(torch.equal(v2[name], v3[name]) for name in names)


def test_run_record_and_result(sample_index, monkeypatch):
    from napari_learn_complete.engine import device, metrics
    from napari_learn_complete.engine import train as train_module

    entered = []

    def spy(dev, operation):
        entered.append(operation)
        return device.precision(dev, operation)

    monkeypatch.setattr(train_module, "precision", spy)
    monkeypatch.setattr(metrics, "precision", spy)
    _model(sample_index)
    result = learn(sample_index, category="square",
                   settings=LearnSettings(epochs=2, test_percent=50, mix_in=1, seed=3))
    row = _run(sample_index, result.run_id)
    assert (row["operation"], row["kind"], row["status"], row["version"]) == \
        ("learn", "roi", "done", result.version)
    scope = json.loads(row["scope"])
    assert scope["category"] == "square"
    assert [i["name"] for i in scope["images"]] == ["sample_001.png", "sample_005.png"]
    assert len(scope["test"]) == 1 and len(scope["mix_in"]) == 1
    assert scope["mix_in"][0]["name"] not in {"sample_001.png", "sample_005.png"}
    assert result.images == 2  # one scope image for training plus one mixed in
    assert result.notes == [] == scope["notes"]  # one of two images held out, as asked
    assert json.loads(row["losses"]) == result.losses and len(result.losses) == 2
    assert json.loads(row["metrics"]) == result.metrics
    assert set(result.metrics) >= {"box_AP", "box_AP50", "box_AP75"}
    assert row["seconds"] == pytest.approx(result.seconds)
    settings = json.loads(row["settings"])
    assert (settings["epochs"], settings["mode"], settings["test_percent"], settings["mix_in"]) \
        == (2, "heads", 50, 1)
    # each training step at Learn's precision, the held-out evaluation at inference's
    assert entered.count("train") == 2 and set(entered) == {"train", "infer"}
    # Complete's dialog suggestion, judged on the held-out image, kept with the new version
    suggested = active_model(sample_index).config.suggested["square"]
    assert (suggested.held_out, suggested.images) == (True, 1)


def test_learn_on_one_image_says_nothing_was_held_out(sample_index):
    _model(sample_index)
    result = learn(sample_index, images=SCOPE[:1],
                   settings=LearnSettings(epochs=1, test_percent=50))
    note = "1 image: nothing held out for testing (50% test data needs at least 2 images)"
    assert result.notes == [note] and result.metrics == {}
    scope = json.loads(_run(sample_index, result.run_id)["scope"])
    assert scope["notes"] == [note] and scope["test"] == []


def test_keypoint_learn_trains_keypoints_and_roi_learn_leaves_them(sample_index, monkeypatch):
    from napari_learn_complete.engine import train as train_module

    original, passes = train_module.predict, []

    def recorded(*args, **kwargs):
        targets, outputs = original(*args, **kwargs)
        passes.append(any("keypoints" in out for out in outputs))
        return targets, outputs

    monkeypatch.setattr(train_module, "predict", recorded)
    handle = _model(sample_index, keypoints=True)
    roi = learn(sample_index, images=SCOPE, settings=LearnSettings(epochs=1))
    kps = learn(sample_index, category="triangle", kind="keypoints",
                settings=LearnSettings(epochs=1))
    v1, v2, v3 = (_weights(handle, n) for n in (1, roi.version, kps.version))
    key = "roi_heads.keypoint_predictor.kps_score_lowres.weight"
    assert torch.equal(v1[key], v2[key]) and not torch.equal(v2[key], v3[key])
    assert _run(sample_index, kps.run_id)["kind"] == "keypoints"
    # each Learn's suggestion judges boxes and scores only: the keypoint head did not run for it
    assert passes == [False, False]
    assert active_model(sample_index).config.suggested


@pytest.mark.parametrize(
    ("setup", "call", "message"),
    [
        ({"purpose": "identify"}, {"images": SCOPE},
         "Learn is not supported for identify models"),
        ({}, {"images": ["sample_010.png"]}, "have no boxes"),  # unlabelled images
        ({}, {"images": ["sample_001.png"], "kind": "keypoints"}, "does not predict keypoints"),
        ({"keypoints": True}, {"images": ["sample_001.png"], "kind": "keypoints"},
         "have no keypoints"),
        ({"keypoints": True}, {"category": "disc", "kind": "keypoints"},
         "keypoints are not enabled for category 'disc'"),
        (None, {"images": SCOPE}, "^no model yet: create one in the Model panel"),
    ],
)
def test_refusals_change_nothing(sample_index, db_dump, setup, call, message):
    if setup is not None:
        _model(sample_index, **setup)
    before = db_dump(sample_index)
    with pytest.raises(RefusedError, match=message):
        learn(sample_index, **call)
    assert db_dump(sample_index) == before


def test_empty_scope_refused_and_nothing_changed(sample_index, db_dump):
    _model(sample_index)
    sample_index.add_category("empty")
    before = db_dump(sample_index)
    with pytest.raises(RefusedError, match="category 'empty' has no observations"):
        learn(sample_index, category="empty")
    with pytest.raises(RefusedError, match="no images were selected"):
        learn(sample_index, images=[])
    assert db_dump(sample_index) == before


def test_cancel_keeps_the_previous_version(sample_index):
    handle = _model(sample_index)
    files = sorted(p.name for p in (handle.folder / "versions").iterdir())
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1  # let one step run, then stop

    with pytest.raises(Cancelled):
        learn(sample_index, images=SCOPE, settings=LearnSettings(epochs=2), cancel=cancel)
    handle = active_model(sample_index)
    assert handle.active_version == 1 and [v.number for v in handle.versions()] == [1]
    assert sorted(p.name for p in (handle.folder / "versions").iterdir()) == files
    [row] = sample_index.query("SELECT status, version FROM runs")
    assert (row["status"], row["version"]) == ("cancelled", None)


def test_full_training_uses_the_model_settings_on_every_labelled_image(sample_index):
    _model(sample_index, lr_decay="constant", epochs=2, patience=1, test_percent=34.0,
           learning_rate=0.005)
    events: list[Progress] = []
    result = train(sample_index, progress=events.append)
    row = _run(sample_index, result.run_id)
    scope = json.loads(row["scope"])
    assert [i["name"] for i in scope["images"]] == [f"sample_{i:03d}.png" for i in range(6)]
    assert len(scope["test"]) == 2 and result.images == 4  # 34% of 6 held out
    assert {e.stage for e in events} == {"train"}
    assert [e.lr for e in events][1:] == pytest.approx([0.005] * (len(events) - 1))  # constant
    assert row["operation"] == "train" and row["status"] == "done"
    assert "box_AP" in result.metrics
    assert active_model(sample_index).version(result.version).parent == 1


def test_train_refuses_identify_and_an_unlabelled_index(sample_index, empty_index, db_dump):
    _model(sample_index, purpose="identify")
    before = db_dump(sample_index)
    with pytest.raises(RefusedError, match="not supported for identify models"):
        train(sample_index)
    assert db_dump(sample_index) == before
    empty_index.add_category("thing")
    create_model(empty_index, weights="none", min_size=96)
    with pytest.raises(RefusedError, match="no labelled images"):
        train(empty_index)



def _easy_index(folder):
    """18 images of one red disc on grey noise: learnable from random weights in a few epochs."""
    import numpy as np
    from PIL import Image

    from napari_learn_complete.index import Index

    index = Index.create(folder)
    rng = np.random.default_rng(0)
    paths, boxes = [], []
    yy, xx = np.mgrid[:64, :64]
    for i in range(18):
        pixels = rng.normal(60, 10, (64, 64, 3))
        r = int(rng.integers(10, 16))
        cx, cy = (int(v) for v in rng.integers(r + 1, 64 - r - 1, 2))
        pixels[(xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r] = (230, 60, 50)
        path = folder / f"img{i:02d}.png"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
        paths.append(path)
        boxes.append((cx - r, cy - r, cx + r, cy + r))
    index.add_images(paths)
    index.add_category("disc")
    index.add_observations([{"image": f"img{i:02d}.png", "category": "disc", "box": box}
                            for i, box in enumerate(boxes)])
    return index


@pytest.mark.slow
def test_short_learn_improves_held_out_ap(tmp_path):
    from napari_learn_complete.engine.data import DetectionDataset, make_loader
    from napari_learn_complete.engine.metrics import coco_metrics, predict

    index = _easy_index(tmp_path / "easy")
    torch.manual_seed(0)
    _model(index, batch_size=4, warmup_iters=2)
    held_out = index.images()[12:]

    def held_out_ap50():
        handle = active_model(index)
        loader = make_loader(DetectionDataset(index, held_out, handle.config), batch_size=6,
                             shuffle=False)
        targets, predictions = predict(handle.load()[0], loader, torch.device("cpu"))
        return coco_metrics(targets, predictions, 1)["box_AP50"]

    before = held_out_ap50()
    # 180 steps: at 120 the boxes were at the edge of the suggestion's IoU 0.85 with any box head
    # (min score 0.94 with torchvision's, write nothing with 256 or 512 wide; docs/learn.md)
    learn(index, images=[i.name for i in index.images()[:12]],
          settings=LearnSettings(epochs=60, mode="full"))
    after = held_out_ap50()
    assert after > before + 0.3, (before, after)
    # the learned model saves corrections on its 12 images: Complete's dialog suggests keeping
    # some of its detections, at most one per image (each holds one disc)
    suggested = active_model(index).config.suggested["disc"]
    assert suggested.min_score < 1.0
    assert (suggested.max_detections, suggested.images, suggested.held_out) == (1, 12, False)


def test_heads_only_runs_the_frozen_backbone_once_per_image_view(sample_index, monkeypatch):
    from napari_learn_complete.engine import train as train_module
    from napari_learn_complete.engine.features import CachedBackbone

    # one image per batch: the sample's images differ in size, so a batch's padding (which the
    # backbone sees) would otherwise depend on which images share it
    _model(sample_index, batch_size=1,
           augment=Augment(scale_jitter=(0.5, 1.5), color_jitter=0.4))
    caches = []

    def recorded(model):
        caches.append(train_module.cache_backbone.__wrapped__(model))
        return caches[-1]

    recorded.__wrapped__ = train_module.cache_backbone
    monkeypatch.setattr(train_module, "cache_backbone", recorded)
    trained = []
    suggest = train_module._Trainer.suggest
    monkeypatch.setattr(train_module._Trainer, "suggest",
                        lambda trainer: trained.append(caches[-1].computed) or suggest(trainer))
    result = learn(sample_index, images=SCOPE, settings=LearnSettings(epochs=4))
    [cache] = caches
    # 4 images x 4 epochs = 16 passes; at most 2 views (flipped or not) each were computed
    assert 0 < trained[0] <= 2 * len(SCOPE) < 4 * len(SCOPE)
    # the suggestion, judged on the images as Complete sees them (engine/views.py: flipped or
    # not, at 1 and 1.2 times the input size), computes only the views not computed yet
    assert cache.computed <= 2 * 2 * len(SCOPE)
    handle = active_model(sample_index)
    assert not isinstance(handle.load()[0].backbone, CachedBackbone)  # saved as the real one
    assert set(_weights(handle, result.version)) == set(_weights(handle, 1))
    augment = json.loads(_run(sample_index, result.run_id)["settings"])["training"]["augment"]
    assert (augment["scale_jitter"], augment["color_jitter"]) == ([1.0, 1.0], 0.0)


def test_the_cached_backbone_gives_the_backbones_own_features(sample_index):
    from napari_learn_complete.engine.features import CachedBackbone

    model = _model(sample_index).load()[0]
    torch.manual_seed(0)
    batch = torch.stack([torch.zeros(3, 96, 128), torch.rand(3, 96, 128),
                         torch.linspace(-3, 3, 96 * 128).reshape(96, 128).expand(3, 96, 128)])
    expected = model.backbone(batch)
    cached = CachedBackbone(model.backbone)
    unfolded = []
    model.backbone.register_forward_hook(lambda *_: unfolded.append(1))
    first = cached(batch[:2])
    second = cached(batch)  # two served from memory, one computed
    assert cached.computed == 3
    # computed by a copy with the BatchNorms folded into the convolutions, as Complete computes
    assert unfolded == [] and not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in cached.folded.modules())
    for name, level in expected.items():
        scale = level.abs().max()  # a random backbone's features are tiny: compare relative

        def close(a, b, scale=scale):
            return torch.allclose(a / scale, b / scale, atol=1e-4)

        assert not close(level[0], level[1]) and not close(level[1], level[2])  # distinct
        assert close(first[name], level[:2]) and close(second[name], level)


def test_learns_own_predictions_run_batchnorms_folded_and_leave_the_model(sample_index,
                                                                          monkeypatch):
    """The suggestion's and held-out passes compute as Complete does (model/build.py, folded)."""
    from napari_learn_complete.engine import metrics

    model = _model(sample_index).load()[0].train()
    nets, real = [], metrics.detect
    monkeypatch.setattr(metrics, "detect",
                        lambda net, images, views: nets.append(net) or real(net, images, views))
    loader = [([torch.rand(3, 96, 128)], [{"boxes": torch.zeros(0, 4),
                                           "labels": torch.zeros(0, dtype=torch.long)}])]
    _, outputs = metrics.predict(model, loader, torch.device("cpu"))
    assert len(outputs) == 1 and {"boxes", "scores", "labels"} <= set(outputs[0])
    [net] = nets
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    # the model itself keeps its BatchNorms and its training mode
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) and model.training


def test_sampled_regions_follow_the_most_crowded_training_image(sample_index, monkeypatch):
    """128 regions per image for a few objects (the sample's 1-3), torchvision's 512 from 16."""
    from napari_learn_complete.engine import train as train_module

    seen = []

    def spy(model, *args, **kwargs):
        seen.append(model.roi_heads.fg_bg_sampler.batch_size_per_image)
        return real(model, *args, **kwargs)

    real = train_module.train_one_epoch
    monkeypatch.setattr(train_module, "train_one_epoch", spy)
    _model(sample_index)
    learn(sample_index, images=SCOPE, settings=LearnSettings(epochs=1))
    crowded = "sample_000.png"
    before = len(sample_index.observations(images=sample_index.images(names=[crowded])))
    for added, expected in ((6 - before, 192), (20 - 6, 512)):
        sample_index.add_observations([
            {"image": crowded, "category": "disc", "box": (2 + 4 * i, 2, 5 + 4 * i, 5),
             "source": "human"} for i in range(added)])
        learn(sample_index, images=SCOPE, settings=LearnSettings(epochs=1))
        assert seen[-1] == expected
    assert seen[0] == 128


def test_a_full_keypoint_learn_damps_the_keypoint_losss_pull_on_the_backbone(sample_index):
    """The backbone gets KEYPOINT_FEATURE_GRADIENT of the keypoint loss's gradient; the keypoint
    head all of it, and the forward pass is unchanged."""
    import copy

    from napari_learn_complete.engine.train import KEYPOINT_FEATURE_GRADIENT, _trainable
    from napari_learn_complete.model import build_model

    handle = _model(sample_index, keypoints=True)
    plain = build_model(handle.config).train()
    plain.roi_heads.fg_bg_sampler.batch_size_per_image = 32
    damped = copy.deepcopy(plain)
    _trainable(damped, "full", "keypoints", backbone_pretrained=False)
    images = [torch.rand(3, 96, 96)]
    target = {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([3]),
              "keypoints": torch.tensor([[[30.0, 12.0, 2], [10.0, 70.0, 2], [60, 70, 2]]])}
    grads = []
    for model in (plain, damped):
        torch.manual_seed(0)  # the same sampled regions
        losses = model(images, [target])
        losses["loss_keypoint"].backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()
                      if p.grad is not None})
        grads[-1]["loss"] = losses["loss_keypoint"].detach()
    (plain_grads, damped_grads) = grads
    assert torch.allclose(plain_grads["loss"], damped_grads["loss"])
    backbone = [name for name, _ in backbone_parameters(plain) if name in plain_grads]
    assert backbone and KEYPOINT_FEATURE_GRADIENT < 1
    for name in backbone:
        assert torch.allclose(damped_grads[name], KEYPOINT_FEATURE_GRADIENT * plain_grads[name],
                              rtol=1e-3, atol=1e-6), name
    head = [name for name in plain_grads if name.startswith("roi_heads.keypoint")]
    assert head and all(torch.allclose(damped_grads[n], plain_grads[n]) for n in head)
