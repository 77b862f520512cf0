"""The run history (``index.runs``): records, announcements, the journal and exact undo."""

from __future__ import annotations

import pytest

from napari_learn_complete.errors import BadInputError, RefusedError


def _start(index, operation="complete", **kw):
    return index.runs.start(operation, model_id=None, kind="roi",
                            scope={"category": "disc", **kw}, settings={"min_score": 0.5})


def test_runs_are_recorded_listed_and_announced(sample_index):
    heard = []
    sample_index.subscribe(heard.append)
    learn = _start(sample_index, "learn")
    sample_index.runs.finish(learn, "cancelled", seconds=1.5, losses=[2.0, 1.0])
    complete = _start(sample_index)
    sample_index.runs.finish(complete, "done", seconds=0.5, metrics={"written": 3})
    assert [(c.table, c.action, c.ids) for c in heard] == [
        ("runs", "added", (learn,)), ("runs", "updated", (learn,)),
        ("runs", "added", (complete,)), ("runs", "updated", (complete,))]
    run = sample_index.runs.get(learn)
    assert (run.operation, run.status, run.seconds, run.losses) == ("learn", "cancelled", 1.5,
                                                                   [2.0, 1.0])
    assert run.scope == {"category": "disc"} and run.settings == {"min_score": 0.5}
    assert [r.id for r in sample_index.runs.list()] == [complete, learn]  # newest first
    assert [r.id for r in sample_index.runs.list(operations=["learn"])] == [learn]
    assert sample_index.runs.latest_undoable().id == complete
    with pytest.raises(BadInputError, match="no run 99"):
        sample_index.runs.get(99)
    with pytest.raises(BadInputError, match="run status must be one of"):
        sample_index.runs.finish(complete, "half-done", seconds=1)


def test_interrupted_runs_are_ended_once(sample_index):
    running, finished = _start(sample_index), _start(sample_index)
    sample_index.runs.finish(finished, "done", seconds=1)
    assert sample_index.runs.end_interrupted([running, finished], "failed") == [running]
    assert sample_index.runs.get(running).status == "failed"
    assert sample_index.runs.get(finished).status == "done"
    assert sample_index.runs.get(running).undoable  # what a failed Complete committed stays


def _journaled_run(index) -> tuple[int, int]:
    """A Complete-like run that changes one observation and adds another, journaled."""
    disc = index.observations(category="disc")[0]
    run = _start(index)
    with index.transaction():
        states = {disc.id: index.runs.snapshot(disc.id)}
        index.update_observation(disc.id, box=(1, 1, 9, 9), source="model", run_id=run)
        new = index.add_observation(disc.image_id, "disc", box=(2, 2, 5, 5), source="model",
                                    run_id=run)
        states[new.id] = None
        index.runs.journal(run, states)
    index.runs.finish(run, "done", seconds=1)
    assert sorted(index.runs.observation_ids(run)) == sorted([disc.id, new.id])
    return run, new.id


def _without_runs(dump):
    return {k: v for k, v in dump.items() if k not in ("runs", "run_changes")}


def test_the_journal_undoes_a_run_exactly(sample_index, db_dump):
    before = db_dump(sample_index)
    run, _ = _journaled_run(sample_index)
    assert sample_index.runs.undo(run) == 2
    assert _without_runs(db_dump(sample_index)) == _without_runs(before)
    assert sample_index.runs.get(run).status == "undone"
    assert sample_index.runs.latest_undoable() is None
    with pytest.raises(RefusedError, match="is undone"):
        sample_index.runs.undo(run)


def test_undo_is_refused_after_a_later_edit(sample_index, db_dump):
    run, new_id = _journaled_run(sample_index)
    sample_index.update_observation(new_id, box=(3, 3, 5, 5))  # a person edits the result
    before = db_dump(sample_index)
    with pytest.raises(RefusedError, match=f"observation {new_id} was changed after the run"):
        sample_index.runs.undo(run)
    assert db_dump(sample_index) == before


def test_only_observation_writing_runs_are_undone(sample_index):
    learn = _start(sample_index, "learn")
    sample_index.runs.finish(learn, "done", seconds=1)
    with pytest.raises(RefusedError, match="only Complete and accept runs can be undone"):
        sample_index.runs.undo(learn)
    with pytest.raises(RefusedError, match="is running"):
        sample_index.runs.undo(_start(sample_index))
