"""The Ray engine: Complete and propose with the model on a local Ray of 2 CPU workers, written
here, exactly as the local engine writes them (an untrained, zero-threshold model: see
tests/untrained.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_learn_complete import api
from napari_learn_complete.cli import main
from napari_learn_complete.engine.complete import complete
from napari_learn_complete.engine.proposals import propose
from napari_learn_complete.engine.settings import CompleteSettings
from napari_learn_complete.errors import Cancelled, RefusedError
from napari_learn_complete.index import Index
from napari_learn_complete.model import active_model
from napari_learn_complete.model.build import build_model, save_weights
from untrained import untrained_model

pytest.importorskip(
    "ray.data", reason='the Ray engine is an optional extra: pip install '
                       '"napari-learn-complete[ray]" (scripts/setup.sh --test installs it)')
import ray  # after the skip: ray.data imported means ray is there

from napari_learn_complete.engine.ray_runner import (
    INSTALL,
    ModelWorker,
    RayEngine,
    RaySource,
)

NAMES = [f"sample_{i:03d}.png" for i in range(6, 12)]  # unlabelled: nothing to deduplicate
SETTINGS = CompleteSettings(max_detections=2, batch_size=2)  # 3 batches of 2 images


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray of 2 CPUs for the module (starting one costs seconds), always shut down.
    Ray Data 2.60 logs its context with arguments its message does not format; pytest's log
    capture would fail the run on it (``logging.raiseExceptions``), logging itself skips it."""
    raising, logging.raiseExceptions = logging.raiseExceptions, False
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    logging.raiseExceptions = raising


@pytest.fixture
def index(sample_index: Index) -> Index:
    untrained_model(sample_index, min_size=64, max_detections=100)
    return sample_index


def written(index: Index, run_id: int) -> dict[int, list[tuple]]:
    """What a run wrote, per image: (box, score, source, model version), best first."""
    found: dict[int, list[tuple]] = {}
    for obs in index.observations(run_id=run_id):
        found.setdefault(obs.image_id, []).append(
            (obs.box, obs.score, obs.source, obs.model_version))
    return {image: sorted(rows, key=lambda r: -r[1]) for image, rows in found.items()}


def assert_same(ray_run: dict, local_run: dict) -> None:
    """The same detections within float tolerance (each a different process's float sums)."""
    assert ray_run.keys() == local_run.keys()
    for image, rows in local_run.items():
        assert len(ray_run[image]) == len(rows)
        for (box, score, *rest), (box2, score2, *rest2) in zip(ray_run[image], rows,
                                                                strict=True):
            assert box == pytest.approx(box2, abs=1e-3) and score == pytest.approx(score2, 1e-4)
            assert rest == rest2


def local(index: Index, settings: CompleteSettings = SETTINGS) -> dict[int, list[tuple]]:
    """What the local engine writes on NAMES, then undone."""
    result = complete(index, NAMES, "square", settings=settings, device="cpu")
    done = written(index, result.run_id)
    index.runs.undo(result.run_id)
    return done


def test_ray_complete_writes_what_local_complete_writes_as_one_undoable_run(index, db_dump):
    """...with the model version of its submission: the weight file replaced afterwards (as a
    Learn or a copy would) changes nothing the workers run."""
    before = db_dump(index)
    expected = local(index)
    source = RaySource(index, RayEngine(workers=2))  # submitted: the version is pinned
    handle = active_model(index)
    # another random model over the same file
    save_weights(handle.version(handle.active_version).file, build_model(handle.config, seed=1),
                 handle.config, {})
    assert local(index) != expected  # the file now holds another model
    batches: list[list[int]] = []
    result = complete(index, NAMES, "square", settings=SETTINGS, on_batch=batches.append,
                      source=source)
    assert (result.images, result.written) == (6, 12)
    assert_same(written(index, result.run_id), expected)
    # the driver wrote them: one transaction per batch, one run, recorded as the local one is
    assert len(batches) == 3
    assert sorted(i for ids in batches for i in ids) == sorted(result.observation_ids)
    [run] = index.query("SELECT * FROM runs WHERE id = ?", (result.run_id,))
    assert (run["operation"], run["status"], run["model_id"]) == (
        "complete", "done", active_model(index).id)
    assert json.loads(run["metrics"])["images"] == 6
    index.runs.undo(result.run_id)
    assert db_dump(index)["observations"] == before["observations"]


class CrashingWorker(ModelWorker):
    """A worker whose process dies once, on the batch holding sample_008; every batch it
    starts is logged (ids) first, so the test sees what was predicted twice."""

    log = ""  # set by the test (a class attribute travels with the class to the workers)

    def __call__(self, batch):
        log = Path(self.log)
        with log.open("a") as out:
            out.write(" ".join(str(int(i)) for i in batch["id"]) + "\n")
        crashed = log.with_suffix(".crashed")
        if 9 in {int(i) for i in batch["id"]} and not crashed.exists():
            crashed.touch()
            os._exit(1)  # the worker process is lost, as on a node failure
        return super().__call__(batch)


def test_a_lost_worker_costs_only_its_batch_which_is_retried(index, tmp_path, monkeypatch):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/
    monkeypatch.setattr(CrashingWorker, "log", str(tmp_path / "predicted.log"))
    expected = local(index)
    assert index.image("sample_008.png").id == 9
    result = complete(index, NAMES, "square", settings=SETTINGS,
                      source=RaySource(index, RayEngine(workers=2), worker=CrashingWorker))
    assert (tmp_path / "predicted.crashed").exists()
    assert_same(written(index, result.run_id), expected)  # every image written once
    lines = (tmp_path / "predicted.log").read_text().split("\n")
    counts: dict[str, int] = {}
    for line in filter(None, lines):
        for image_id in line.split():
            counts[image_id] = counts.get(image_id, 0) + 1
    again = {image_id for image_id, n in counts.items() if n > 1}
    assert again and "9" in again and len(again) <= SETTINGS.batch_size  # its batch only
    assert max(counts.values()) == 2


def test_cancel_keeps_the_committed_batches_undoable_as_one_run(index, db_dump):
    before = db_dump(index)
    batches: list[list[int]] = []
    with pytest.raises(Cancelled, match=r"after 2 of 6 images.*undo it"):
        complete(index, NAMES, "square", settings=SETTINGS, on_batch=batches.append,
                 cancel=lambda: bool(batches), source=RaySource(index, RayEngine(workers=1)))
    [run] = index.query("SELECT * FROM runs")
    assert run["status"] == "cancelled"
    assert sorted(o.id for o in index.observations(run_id=run["id"])) == sorted(batches[0])
    assert len(batches[0]) == 4
    index.runs.undo(run["id"])
    assert db_dump(index)["observations"] == before["observations"]


@pytest.fixture
def streamed(monkeypatch) -> list[int]:
    """The sizes of the batches Ray sources stream (to see the workers were used)."""
    sizes: list[int] = []
    stream = RaySource.predictions

    def counted(self, *args, **kwargs):
        for batch in stream(self, *args, **kwargs):
            sizes.append(len(batch[0]))
            yield batch

    monkeypatch.setattr(RaySource, "predictions", counted)
    return sizes


def test_propose_through_the_api_with_the_ray_engine_matches_local(index, streamed):
    # api.propose makes the job napari's console or the engine process would run
    settings = CompleteSettings(max_detections=2, batch_size=3)
    expected = propose(index, "square", settings=settings, device="cpu")
    found = api.propose(index, "square", settings=settings, engine=RayEngine(workers=2))
    assert sum(streamed) == 4  # the labelled images without a square, on the workers
    assert [(p.id, p.image_id, p.model_version) for p in found] == \
        [(p.id, p.image_id, p.model_version) for p in expected]
    for mine, theirs in zip(found, expected, strict=True):
        assert mine.box == pytest.approx(theirs.box, abs=1e-3)
        assert mine.score == pytest.approx(theirs.score, 1e-4)


def test_cli_complete_on_ray_prints_its_summary_last(index, capsys, streamed):
    code = main(["complete", str(index.path), "--images", *NAMES[:2], "--category", "square",
                 "--engine", "ray", "--workers", "1", "--batch-size", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["images"], summary["written"]) == (2, 2) and streamed == [1, 1]
    assert "images/s" in err  # the progress bar says the rate


def test_without_ray_the_refusal_says_how_to_install_it(index, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray: ImportError
    with pytest.raises(RefusedError, match="Ray is not installed") as refused:
        RaySource(index, RayEngine())
    assert INSTALL in str(refused.value)
    code = main(["complete", str(index.path), "--images", NAMES[0], "--category", "square",
                 "--engine", "ray"])
    assert code == 2 and INSTALL in capsys.readouterr().err


def test_a_ray_job_is_made_without_importing_ray_or_torch():
    """napari's process builds the job; the engine process imports Ray when it runs it."""
    code = ("import sys; from napari_learn_complete.engine.jobs import Job; "
            "from napari_learn_complete.engine.ray_runner import RayEngine; "
            "Job('x', 'complete', {'engine': RayEngine(address='ray://head:10001')}); "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_one_gpu_per_worker_when_the_cluster_has_gpus_unless_told(index, streamed):
    assert RayEngine().worker_gpus(cluster_gpus=0) == 0.0  # CPU actors
    assert RayEngine().worker_gpus(cluster_gpus=8) == 1.0
    assert RayEngine(gpus_per_worker=0).worker_gpus(cluster_gpus=8) == 0.0
    assert RayEngine(gpus_per_worker=0.5).worker_gpus(cluster_gpus=8) == 0.5
    # this local Ray has no GPU: the default runs CPU actors (the tests above), as asked of Ray
    assert ray.cluster_resources().get("GPU", 0) == 0
