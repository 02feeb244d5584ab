"""``Store.set_power_field``: a figure added to a stored result's power after the job (a
queue's clock fit), in one transaction, never at the cost of what the result already holds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backends.core.records import JobState
from backends.core.store import Store
from support.records import make_job, make_result


def finished(store: Store, name: str, power: dict | None) -> str:
    store.add_job(make_job(name), key=name)
    store.claim_next([f"dev:{name}"])
    result = make_result(f"job-{name}")
    result.power = power
    store.finish(f"job-{name}", result)
    return f"job-{name}"


def test_a_power_field_is_added_and_the_rest_of_the_result_kept(
    store: Store, store_path: Path
) -> None:
    job_id = finished(store, "a", {"energy_per_inference_mj": 1.25})
    updated = store.set_power_field(job_id, "queue", {"jobs": 2, "clock_drift_ppm": 151.0})
    assert updated.power == {
        "energy_per_inference_mj": 1.25,
        "queue": {"jobs": 2, "clock_drift_ppm": 151.0},
    }
    store.set_power_field(job_id, "queue", {"jobs": 3})  # a later fit replaces it
    stored = store.result(job_id)
    assert stored is not None and stored.power is not None
    assert stored.power["queue"] == {"jobs": 3}
    assert stored.latencies_us == [100.0, 110.0, 120.0]
    assert store.job(job_id).state is JobState.DONE
    db = sqlite3.connect(store_path)  # one row, seen as written by another connection
    try:
        assert (
            db.execute("SELECT COUNT(*) FROM results WHERE job_id = ?", (job_id,)).fetchone()[0]
            == 1
        )
    finally:
        db.close()


def test_a_job_without_a_result_or_power_figures_is_refused_and_left_as_it_was(
    store: Store,
) -> None:
    store.add_job(make_job("b"), key="b")
    with pytest.raises(KeyError, match="job-b"):
        store.set_power_field("job-b", "queue", {})
    assert store.result("job-b") is None
    job_id = finished(store, "c", None)
    with pytest.raises(ValueError, match="no power figures"):
        store.set_power_field(job_id, "queue", {})
    stored = store.result(job_id)
    assert stored is not None and stored.power is None
