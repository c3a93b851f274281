"""Unit tests of the SQLite history store."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from labd.errors import ConfigError, NoSuchSet, StoreDamaged
from labd.store import FILENAME, INTERRUPTED_DETAIL, SCHEMA_VERSION, Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / FILENAME


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path)
    yield s
    s.close()


def _new(store: Store, mechanism: str = "shared", at: float | None = None) -> int:
    return store.new_set(mechanism, "demo", 3, 1, {"lock": False, "interval": 1.0}, at=at)


def _sample(set_id: int, at: float, value: int = 0) -> tuple[object, ...]:
    return (set_id, at, value, value, 0, 0, 0, 1.0, None, None)


def test_creates_private_directory_and_file(db_path: Path, store: Store) -> None:
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_wal_mode_and_schema_version(db_path: Path, store: Store) -> None:
    _new(store)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    Store(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer"):
        Store(db_path)


def test_garbage_file_is_a_config_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"not a database at all, " * 100)
    with pytest.raises(StoreDamaged, match="cannot be used: file is not a database"):
        Store(db_path)


def test_new_set_row_and_first_event(store: Store) -> None:
    set_id = _new(store, at=100.0)
    record = store.get(set_id)
    assert record is not None
    assert record["id"] == set_id
    assert record["mechanism"] == "shared"
    assert record["name"] == "demo"
    assert (record["counters"], record["printers"]) == (3, 1)
    assert record["params"] == {"lock": False, "interval": 1.0}
    assert record["state"] == "starting"
    assert record["created_at"] == 100.0
    assert record["started_at"] is None and record["stopped_at"] is None
    assert record["final"] is None and record["error"] is None
    assert record["events"] == [{"state": "starting", "at": 100.0, "detail": ""}]


def test_get_unknown_is_none(store: Store) -> None:
    assert store.get(42) is None


def test_ids_are_never_reused_across_reopen_and_deletes(db_path: Path) -> None:
    store = Store(db_path)
    first = [_new(store) for _ in range(3)]
    assert first == sorted(first) and first[0] >= 1
    store.close()

    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("DELETE FROM sets")  # also the highest id
    conn.close()

    store = Store(db_path)
    try:
        again = _new(store)
        assert again > max(first)
        assert store.get(first[-1]) is None
    finally:
        store.close()


def test_states_events_and_timestamps(store: Store) -> None:
    set_id = _new(store, at=10.0)
    store.set_state(set_id, "running", at=11.0)
    store.set_state(set_id, "degraded", "counter 2 exited with code 1", at=12.0)
    store.set_state(set_id, "running", at=13.0)  # does not move started_at
    store.set_state(set_id, "stopping", at=14.0)
    store.set_state(set_id, "stopped", "stopped by request", at=15.0)
    record = store.get(set_id)
    assert record is not None
    assert record["state"] == "stopped"
    assert record["started_at"] == 11.0
    assert record["stopped_at"] == 15.0
    assert record["error"] is None
    assert [(e["state"], e["at"]) for e in record["events"]] == [
        ("starting", 10.0),
        ("running", 11.0),
        ("degraded", 12.0),
        ("running", 13.0),
        ("stopping", 14.0),
        ("stopped", 15.0),
    ]
    assert record["events"][2]["detail"] == "counter 2 exited with code 1"


def test_failed_keeps_error_and_stop_time(store: Store) -> None:
    set_id = _new(store, at=1.0)
    store.set_state(set_id, "failed", "mechanism setup failed: no /dev/shm", at=2.0)
    record = store.get(set_id)
    assert record is not None
    assert record["error"] == "mechanism setup failed: no /dev/shm"
    assert record["stopped_at"] == 2.0
    assert record["started_at"] is None


def test_set_state_default_time_is_now(store: Store) -> None:
    set_id = _new(store)
    store.set_state(set_id, "running")
    record = store.get(set_id)
    assert record is not None
    assert record["started_at"] is not None
    assert record["started_at"] >= record["created_at"] > 1e9


def test_set_state_rejects_unknown_set_and_state(store: Store) -> None:
    with pytest.raises(NoSuchSet):
        store.set_state(99, "running")
    set_id = _new(store)
    with pytest.raises(ValueError, match="unknown set state"):
        store.set_state(set_id, "sleeping")


def test_finish_stores_final_status(store: Store) -> None:
    set_id = _new(store)
    final = {"id": set_id, "value": 10, "attempted": 12, "lost": 2, "processes": []}
    store.finish(set_id, final)
    record = store.get(set_id)
    assert record is not None and record["final"] == final
    with pytest.raises(NoSuchSet):
        store.finish(set_id + 1, final)


def test_mark_interrupted(db_path: Path) -> None:
    store = Store(db_path)
    ids = {state: _new(store, at=1.0) for state in ("starting", "running", "degraded")}
    for state in ("running", "degraded"):
        store.set_state(ids[state], state, at=2.0)
    stopping = _new(store, at=1.0)
    store.set_state(stopping, "stopping", at=3.0)
    done = _new(store, at=1.0)
    store.set_state(done, "stopped", at=3.0)
    store.close()

    store = Store(db_path)  # as labd does at start-up
    try:
        marked = store.mark_interrupted(at=50.0)
        assert marked == sorted([*ids.values(), stopping])
        for set_id in marked:
            record = store.get(set_id)
            assert record is not None
            assert record["state"] == "interrupted"
            assert record["stopped_at"] == 50.0
            assert record["events"][-1] == {
                "state": "interrupted",
                "at": 50.0,
                "detail": INTERRUPTED_DETAIL,
            }
        untouched = store.get(done)
        assert untouched is not None and untouched["state"] == "stopped"
        assert store.mark_interrupted(at=60.0) == []
    finally:
        store.close()


def test_history_lists_finished_sets_newest_first(store: Store) -> None:
    stopped = _new(store)
    store.set_state(stopped, "stopped")
    running = _new(store)
    store.set_state(running, "running")
    failed = _new(store)
    store.set_state(failed, "failed", "boom")
    interrupted = _new(store)
    store.mark_interrupted()  # also marks `running`
    assert [r["id"] for r in store.history()] == [interrupted, failed, running, stopped]
    assert [r["id"] for r in store.history(limit=2)] == [interrupted, failed]
    assert "events" not in store.history()[0]


def test_samples_roundtrip_and_limit(store: Store) -> None:
    set_id = _new(store)
    other = _new(store)
    store.add_samples([_sample(set_id, float(t), value=t) for t in range(5)])
    store.add_samples([_sample(other, 0.0)])
    store.add_samples([])
    rows = store.samples(set_id)
    assert [r["value"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0] == {
        "at": 0.0,
        "value": 0,
        "attempted": 0,
        "lost": 0,
        "in_flight": 0,
        "corrupt": 0,
        "rate": 1.0,
        "latency_p50_us": None,
        "latency_p99_us": None,
    }
    assert [r["value"] for r in store.samples(set_id, limit=2)] == [3, 4]
    assert len(store.samples(other)) == 1


def test_samples_are_trimmed_per_set(db_path: Path) -> None:
    store = Store(db_path, keep_per_set=16)
    try:
        set_id = _new(store)
        for t in range(100):
            store.add_samples([_sample(set_id, float(t), value=t)])
            assert len(store.samples(set_id)) <= 16 + 16 // 8
        store.prune()
        rows = store.samples(set_id)
        assert [r["value"] for r in rows] == list(range(84, 100))
    finally:
        store.close()


def test_only_newest_sets_keep_samples(db_path: Path) -> None:
    store = Store(db_path, keep_sets=2)
    try:
        old = _new(store)
        store.add_samples([_sample(old, 1.0)])
        middle = _new(store)
        store.add_samples([_sample(middle, 1.0)])
        assert len(store.samples(old)) == 1
        newest = _new(store)
        assert store.samples(old) == []
        assert len(store.samples(middle)) == 1
        assert store.get(old) is not None  # the set itself stays
        assert store.prune(keep_sets=1) == 1
        assert store.samples(middle) == []
        assert store.samples(newest) == []
    finally:
        store.close()


def test_concurrent_writers(store: Store) -> None:
    errors: list[BaseException] = []
    ids: list[int] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        try:
            barrier.wait()
            for i in range(20):
                set_id = _new(store)
                ids.append(set_id)
                store.set_state(set_id, "running")
                store.add_samples([_sample(set_id, float(i), value=i)] * 3)
                store.get(set_id)
                store.set_state(set_id, "stopped")
                store.finish(set_id, {"value": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(ids)) == 160
    assert len(store.history(limit=1000)) == 160
    assert all(len(store.samples(i)) == 3 for i in ids)
