"""Importing a COCO file again: nothing is doubled, a killed ``--copy`` import can be re-run, and
two imports at once never delete each other's files."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from napari_learn_complete.cli import main
from napari_learn_complete.errors import BadInputError
from napari_learn_complete.index import Index
from napari_learn_complete.index.coco import export_coco, import_coco


@pytest.fixture
def exported(sample_index, tmp_path) -> tuple[Path, Path, int]:
    """The sample index as a COCO file: (file, image folder, number of annotations)."""
    data = export_coco(sample_index, tmp_path / "sample.json")
    return tmp_path / "sample.json", sample_index.images_dir, len(data["annotations"])


def _folder(index: Index) -> set[str]:
    """Everything under images/, hidden staging folders included."""
    return {str(p.relative_to(index.images_dir)) for p in index.images_dir.rglob("*")}


def test_importing_the_same_file_again_adds_nothing_unless_duplicates_are_allowed(
    empty_index, exported
):
    source, images, n = exported
    first = import_coco(empty_index, source, images)
    assert (first.observations, first.already_present) == (n, 0)
    again = import_coco(empty_index, source, images)
    assert (again.images_added, again.images_reused) == (0, 12)
    assert (again.observations, again.already_present) == (0, n)
    assert empty_index.count_observations() == n
    merged = import_coco(empty_index, source, images, allow_duplicates=True)
    assert (merged.observations, merged.already_present) == (n, 0)
    assert empty_index.count_observations() == 2 * n


def test_identical_geometry_within_a_millionth_is_present_and_each_copy_counts_once(
    sample_index, exported, tmp_path
):
    source, images, n = exported  # the sample index holds every annotation of the file
    data = json.loads(source.read_text())
    box = next(a for a in data["annotations"] if "bbox" in a and not a.get("keypoints"))
    points = next(a for a in data["annotations"] if a.get("num_keypoints"))

    def imported(change) -> tuple[int, int]:
        changed = json.loads(json.dumps(data))
        change(changed["annotations"])
        (tmp_path / "changed.json").write_text(json.dumps(changed))
        report = import_coco(sample_index, tmp_path / "changed.json", images)
        return report.already_present, report.observations

    def near(anns):
        ann = next(a for a in anns if a["id"] == box["id"])
        ann["bbox"] = [v + 1e-7 for v in ann["bbox"]]

    def moved(anns):
        next(a for a in anns if a["id"] == box["id"])["bbox"][0] += 1e-3
        next(a for a in anns if a["id"] == points["id"])["keypoints"][0] += 1e-3

    assert imported(near) == (n, 0)
    assert imported(moved) == (n - 2, 2)
    # the file holding an annotation twice: the one copy in the index stands for one of them
    assert imported(lambda anns: anns.append(dict(box, id=10_000))) == (n, 1)
    assert imported(lambda anns: anns.append(dict(box, id=10_000))) == (n + 1, 0)


def test_an_image_referenced_under_another_name_is_reused_by_its_file(empty_index, exported):
    source, images, _ = exported
    empty_index.add_images([images / "sample_000.png"], names=["first"])
    report = import_coco(empty_index, source, images)
    assert (report.images_added, report.images_reused) == (11, 1)
    assert len(empty_index.images()) == 12


def test_cli_reports_what_was_already_there_and_merges_on_request(empty_index, exported, capsys):
    source, images, n = exported
    argv = ["import-coco", str(empty_index.path), str(source), "--images", str(images)]
    assert main(argv) == 0
    assert main(argv) == 0
    out, err = capsys.readouterr()
    report = json.loads(out.strip().splitlines()[-1])
    assert (report["observations"], report["already_present"]) == (0, n)
    assert f"imported 0 new annotations ({n} already in the index, skipped)" in err
    assert main([*argv, "--allow-duplicates"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["observations"] == n
    assert empty_index.count_observations() == 2 * n


def test_copy_completes_over_an_identical_file_a_killed_import_left(empty_index, exported):
    source, images, n = exported
    empty_index.images_dir.mkdir(exist_ok=True)
    shutil.copy2(images / "sample_000.png", empty_index.images_dir / "sample_000.png")
    report = import_coco(empty_index, source, images, copy=True)
    assert (report.images_added, report.observations) == (12, n)
    assert _folder(empty_index) == {r.name for r in empty_index.images()}
    assert all(empty_index.resolve(r).parent == empty_index.images_dir.resolve()
               for r in empty_index.images())


def test_copy_refuses_a_different_file_of_that_name_and_changes_nothing(
    empty_index, exported, db_dump
):
    source, images, _ = exported
    empty_index.images_dir.mkdir(exist_ok=True)
    shutil.copy2(images / "sample_001.png", empty_index.images_dir / "sample_000.png")
    before, files = db_dump(empty_index), _folder(empty_index)
    target = empty_index.images_dir.resolve() / "sample_000.png"
    with pytest.raises(BadInputError, match=f"image sample_000.png: {target} already exists "
                                            "and is not the same file"):
        import_coco(empty_index, source, images, copy=True)
    assert db_dump(empty_index) == before and _folder(empty_index) == files


def test_a_failed_copy_import_removes_only_the_files_it_put_there(
    empty_index, exported, db_dump, monkeypatch
):
    source, images, _ = exported
    empty_index.images_dir.mkdir(exist_ok=True)
    shutil.copy2(images / "sample_000.png", empty_index.images_dir / "sample_000.png")
    before = db_dump(empty_index)

    def fail(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(empty_index, "add_observations", fail)
    with pytest.raises(OSError, match="disk full"):
        import_coco(empty_index, source, images, copy=True)
    assert db_dump(empty_index) == before
    assert _folder(empty_index) == {"sample_000.png"}  # the earlier file stays, no staging


def test_two_copy_imports_at_once_keep_every_file_the_index_references(sample_index, exported):
    source, images, n = exported
    target = Index.create(sample_index.path.parent / "target")
    target.close()
    both_checked = threading.Barrier(2, timeout=20)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with Index(target.path) as index:
                write = index.transaction

                def checked_then_write():
                    both_checked.wait()  # both have checked the file before either writes
                    return write()

                index.transaction = checked_then_write
                import_coco(index, source, images, copy=True)
        except BaseException as exc:  # reported by the assertions below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with Index(target.path) as index:
        records = index.images()
        assert len(records) == 12
        assert [r.name for r in records if not index.resolve(r).is_file()] == []
        assert index.count_observations() == n
        assert _folder(index) == {r.name for r in records}
    assert errors == []
