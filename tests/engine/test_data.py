"""Learn's scope, the test split, the mix-in and the training samples (no training here)."""

from __future__ import annotations

import pytest
import torch

from napari_learn_complete.engine.data import (
    HFLIP_PATTERNS,
    VFLIP_PATTERNS,
    DetectionDataset,
    RandomFlip,
    build_augmentation,
    keypoint_box,
    make_loader,
    mirror_permutation,
)
from napari_learn_complete.engine.scope import (
    labelled_images,
    learn_scope,
    mix_in,
    require_kind,
    split,
    split_notes,
)
from napari_learn_complete.errors import BadInputError, RefusedError
from napari_learn_complete.model.config import Augment, ModelConfig

CATEGORIES = ["disc", "square", "triangle"]
KEYPOINT_CONFIG = ModelConfig(architecture="keypointrcnn", categories=CATEGORIES,
                              keypoint_names=["apex", "left", "right"])


def _observed(index, images):
    return sorted(o.id for o in index.observations(images=images))


def test_scope_from_images_is_exactly_those_images_with_all_their_observations(sample_index):
    names = ["sample_003.png", "sample_001.png", "sample_010.png"]  # 010 is not labelled
    scope = learn_scope(sample_index, images=names)
    assert [i.name for i in scope] == sorted(names)
    observed = {sample_index.category(o.category_id).name
                for o in sample_index.observations(images=scope)}
    assert len(observed) > 1  # several categories ride along
    dataset = DetectionDataset(sample_index, scope, ModelConfig(categories=CATEGORIES))
    assert sum(len(t.labels) for t in dataset.targets) == len(_observed(sample_index, scope))


def test_scope_from_category_takes_every_image_of_it_with_other_observations(sample_index):
    square = sample_index.category("square")
    scope = learn_scope(sample_index, category="square")
    expected = sorted({o.image_id for o in sample_index.observations(category=square.id)})
    assert [i.id for i in scope] == expected
    others = [o for o in sample_index.observations(images=scope) if o.category_id != square.id]
    assert others, "the sample should have other categories beside squares"
    dataset = DetectionDataset(sample_index, scope, ModelConfig(categories=CATEGORIES))
    labels = {int(label) for t in dataset.targets for label in t.labels}
    assert labels == {CATEGORIES.index(sample_index.category(o.category_id).name) + 1
                      for o in sample_index.observations(images=scope)}


def test_scope_leaves_out_video_and_refuses_when_empty(sample_index, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0")
    video = sample_index.add_video(clip, width=64, height=64)
    sample_index.add_observation(video, "disc", box=(1, 1, 9, 9))
    scope = learn_scope(sample_index, images=[video.name, "sample_000.png"])
    assert [i.name for i in scope] == ["sample_000.png"]
    with pytest.raises(RefusedError, match="video clips are not trained on"):
        learn_scope(sample_index, images=[video.name])
    assert video.id not in {i.id for i in labelled_images(sample_index)}
    sample_index.add_category("empty")
    with pytest.raises(RefusedError, match="category 'empty' has no observations"):
        learn_scope(sample_index, category="empty")
    with pytest.raises(RefusedError, match="no images were selected"):
        learn_scope(sample_index, images=[])


def test_scope_kind_rules(sample_index):
    with pytest.raises(RefusedError, match="keypoints are not enabled for category 'disc'"):
        learn_scope(sample_index, category="disc", kind="keypoints")
    with pytest.raises(BadInputError, match="kind must be"):
        learn_scope(sample_index, category="disc", kind="masks")
    with pytest.raises(BadInputError, match="either images or a category"):
        learn_scope(sample_index, images=["sample_000.png"], category="disc")
    unlabelled = learn_scope(sample_index, images=["sample_011.png"])
    with pytest.raises(RefusedError, match="have no boxes"):
        require_kind(sample_index, unlabelled, "roi")
    discs = learn_scope(sample_index, category="disc")
    no_triangle = [i for i in discs if not sample_index.observations(images=[i],
                                                                     category="triangle")]
    with pytest.raises(RefusedError, match="have no keypoints"):
        require_kind(sample_index, no_triangle, "keypoints")
    require_kind(sample_index, learn_scope(sample_index, category="triangle"), "keypoints")


def test_split_size_and_reproducibility(sample_index):
    images = sample_index.images()  # 12
    train, test = split(images, 25, seed=0)
    assert len(test) == 3 and len(train) == 9
    assert {i.id for i in train} | {i.id for i in test} == {i.id for i in images}
    assert split(list(reversed(images)), 25, seed=0) == (train, test)  # order does not matter
    assert [split(images, 25, seed=s)[1] for s in range(5)] != [test] * 5  # the seed does
    assert split(images, 0, seed=0) == (images, [])
    with pytest.raises(BadInputError, match="leaves none of the 1 image"):
        split(images[:1], 60, seed=0)


@pytest.mark.parametrize(("count", "percent", "notes"), [
    (1, 50, ["1 image: nothing held out for testing (50% test data needs at least 2 images)"]),
    (5, 10, ["5 images: nothing held out for testing (10% test data needs at least 6 images)"]),
    (6, 10, []),  # 0.6 rounds to one image held out
    (2, 50, []),
    (1, 0, []),  # no test data asked for: nothing to say
])
def test_split_notes_say_when_the_test_share_holds_out_nothing(sample_index, count, percent,
                                                               notes):
    assert split_notes(count, percent) == notes
    held_none = not split(sample_index.images()[:count], percent, seed=0)[1]
    assert (percent > 0 and held_none) == bool(notes)  # a note exactly when asked but none held


def test_mix_in_draws_labelled_images_from_outside_the_scope(sample_index):
    scope = sample_index.images(names=["sample_000.png", "sample_001.png"])
    outside = {i.id for i in labelled_images(sample_index)} - {i.id for i in scope}
    mixed = mix_in(sample_index, scope, 2, seed=0)
    assert len(mixed) == 2 and {i.id for i in mixed} <= outside
    assert mix_in(sample_index, scope, 2, seed=0) == mixed
    assert {i.id for i in mix_in(sample_index, scope, 50, seed=0)} == outside
    assert mix_in(sample_index, scope, 0, seed=0) == []


def test_targets_map_categories_and_keypoint_slots(sample_index):
    triangle = sample_index.category("triangle")
    [image] = [i for i in sample_index.images()
               if sample_index.observations(images=[i], category=triangle.id)][:1]
    dataset = DetectionDataset(sample_index, [image], KEYPOINT_CONFIG)
    image_tensor, target = dataset[0]
    assert image_tensor.dtype == torch.float32
    assert 0 <= image_tensor.min() <= image_tensor.max() <= 1
    obs = sample_index.observations(images=[image])
    for o, box, label, kps in zip(obs, target["boxes"], target["labels"], target["keypoints"],
                                  strict=True):
        assert tuple(box.tolist()) == pytest.approx(o.box)
        assert CATEGORIES[int(label) - 1] == sample_index.category(o.category_id).name
        if o.category_id == triangle.id:
            assert kps.flatten().tolist() == pytest.approx([v for k in o.keypoints for v in k])
        else:
            assert kps[:, 2].sum() == 0  # discs and squares have no keypoints: invisible


def test_keypoint_only_observation_gets_a_padded_box(empty_index, tmp_path):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.new("RGB", (100, 80)).save(path)
    empty_index.add_images([path])
    empty_index.add_category("mouse", keypoints=["nose", "tail"])
    empty_index.add_observation("a.png", "mouse", keypoints=[(20, 30, 2), (60, 40, 2)])
    config = ModelConfig(architecture="keypointrcnn", categories=["mouse"],
                         keypoint_names=["nose", "tail"])
    _, target = DetectionDataset(empty_index, empty_index.images(), config)[0]
    assert target["boxes"].tolist() == [[16.0, 26.0, 64.0, 44.0]]  # 4 px pad (min), extents
    assert keypoint_box([(0, 0, 2), (100, 70, 2), (5, 5, 0)], 100, 80) == (0.0, 0.0, 100.0, 77.0)


def test_mirror_pairs_found_by_name():
    names = ["apex", "left", "right", "l_eye", "r_eye", "wrist_L", "wrist_R", "Left_ear",
             "right_ear", "top", "bottom"]
    assert mirror_permutation(names, HFLIP_PATTERNS) == [0, 2, 1, 4, 3, 6, 5, 8, 7, 9, 10]
    assert mirror_permutation(names, VFLIP_PATTERNS) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 9]


def test_horizontal_flip_mirrors_boxes_and_swaps_left_right(sample_index):
    triangle = sample_index.category("triangle")
    [image] = [i for i in sample_index.images()
               if sample_index.observations(images=[i], category=triangle.id)][:1]
    plain = DetectionDataset(sample_index, [image], KEYPOINT_CONFIG)
    flipping = DetectionDataset(sample_index, [image], KEYPOINT_CONFIG,
                                augment=Augment(hflip=True, scale_jitter=(1.0, 1.0),
                                                color_jitter=0.0))
    assert isinstance(flipping.transform.transforms[0], RandomFlip)
    before_img, before = plain[0]
    width = image.width
    flipped = None
    for seed in range(10):  # p = 1/2 per draw
        torch.manual_seed(seed)
        after_img, after = flipping[0]
        if not torch.equal(after_img, before_img):
            flipped = after
            break
    assert flipped is not None
    assert torch.equal(after_img, before_img.flip(-1))
    expected = before["boxes"].clone()
    expected[:, [0, 2]] = width - before["boxes"][:, [2, 0]]
    assert torch.allclose(flipped["boxes"], expected)
    tri = next(i for i, label in enumerate(before["labels"])
               if CATEGORIES[label - 1] == "triangle")
    apex, left, right = before["keypoints"][tri]
    f_apex, f_left, f_right = flipped["keypoints"][tri]
    assert f_apex[0] == pytest.approx(width - apex[0])
    # The point that was "right" is now on the left, and is named "left": still the smaller x.
    assert f_left[0] == pytest.approx(width - right[0]) and f_left[0] < f_right[0]
    assert f_right[0] == pytest.approx(width - left[0])


def test_augmentation_steps_are_switchable_and_keep_targets_valid(sample_index):
    off = build_augmentation(Augment(hflip=False, vflip=False, scale_jitter=(1.0, 1.0),
                                     color_jitter=0.0), [])
    assert len(off.transforms) == 1  # only the sanitising step
    full = build_augmentation(Augment(hflip=True, vflip=True, scale_jitter=(0.5, 1.5),
                                      color_jitter=0.3), ["apex", "left", "right"])
    assert len(full.transforms) == 5
    dataset = DetectionDataset(
        sample_index, sample_index.images()[:6], KEYPOINT_CONFIG,
        augment=Augment(hflip=True, vflip=True, scale_jitter=(0.5, 1.5), color_jitter=0.3),
    )
    torch.manual_seed(0)
    for images, targets in make_loader(dataset, batch_size=3, shuffle=True):
        assert len(images) == len(targets) == 3
        for image, target in zip(images, targets, strict=True):
            height, width = image.shape[-2:]
            boxes = target["boxes"]
            assert len(boxes) == len(target["labels"]) == len(target["keypoints"])
            assert (boxes[:, 2] - boxes[:, 0] >= 1).all() and (boxes[:, 3] - boxes[:, 1] >= 1).all()
            assert boxes[:, 0].min() >= 0 and boxes[:, 2].max() <= width
            visible = target["keypoints"][..., 2] > 0
            points = target["keypoints"][visible]
            assert (points[:, 0] >= 0).all() and (points[:, 0] <= width).all()
            assert (points[:, 1] >= 0).all() and (points[:, 1] <= height).all()


def test_training_images_are_decoded_once_per_run(sample_index, monkeypatch):
    from napari_learn_complete.engine import data
    from napari_learn_complete.index import Index

    reads = []
    read_image = Index.read_image
    monkeypatch.setattr(Index, "read_image",
                        lambda self, image, **kw: reads.append(image.id) or read_image(
                            self, image, **kw))
    images = labelled_images(sample_index)
    dataset = DetectionDataset(sample_index, images, KEYPOINT_CONFIG,
                               augment=Augment(color_jitter=0.5))
    first = [dataset[i] for i in range(len(images))]
    second = [dataset[i] for i in range(len(images))]
    assert sorted(reads) == sorted(image.id for image in images)  # one read each, two epochs
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))  # augmented
    plain = DetectionDataset(sample_index, images, KEYPOINT_CONFIG)
    assert torch.equal(plain[0][0], plain[0][0])  # the kept copy is not changed by use

    monkeypatch.setattr(data, "DECODED_CACHE_BYTES", 0)  # nothing fits: read every time
    reads.clear()
    small = DetectionDataset(sample_index, images[:2], KEYPOINT_CONFIG)
    _ = small[0], small[0]
    assert reads == [images[0].id] * 2
