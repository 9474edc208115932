"""The results store under faults, with real processes: a writer killed mid-row, claims of other hosts,
empty claims, a failed claim write, two writers at once."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from keras_corrinit.experiments import _store
from keras_corrinit.experiments._store import COLUMNS, STORE_FORMAT, Store, claim_state, heartbeats

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def new_store(path, **kwargs):
    (path / "store.json").write_text(
        json.dumps({"format": STORE_FORMAT, "package_version": "x", "columns": list(COLUMNS)})
    )
    return Store(path, "x", **kwargs)


def row(key):
    return {"key": key, "final": 0.5, "curve": [0.25, 0.5]}


def python(code, *args):
    """A Python process running `code` (the store module only: no Keras), with `args` in sys.argv."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.path.abspath(ROOT)},
    )


def test_a_writer_killed_mid_row_loses_no_other_row(tmp_path):
    store = new_store(tmp_path)
    store.append(row("first"))
    # a writer that stops (kill -9) after writing half of its row
    writer = python(
        """
        import sys, time
        with open(sys.argv[1], "ab", buffering=0) as f:
            f.write(b'{"key": "lost", "final": 0.')
            print("written", flush=True)
            time.sleep(60)
        """,
        tmp_path / "runs.jsonl",
    )
    assert writer.stdout.readline().strip() == b"written"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    store.append(row("after"))  # the next process's row: on a line of its own, never joined to the half row
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert lines[1] == '{"key": "lost", "final": 0.' and json.loads(lines[2])["key"] == "after"
    with pytest.warns(UserWarning, match=r"runs.jsonl: line 2 is not a complete row .*its run will be redone\.$"):
        assert sorted(store.read()) == ["after", "first"]


def test_a_row_joined_onto_a_half_written_one_by_an_older_writer_is_kept(tmp_path):
    store = new_store(tmp_path)
    (tmp_path / "runs.jsonl").write_text('{"key": "a"}\n{"key": "half", "fin' + json.dumps(row("joined")) + "\n")
    with pytest.warns(UserWarning, match="line 2 is not a complete row .* the complete row after it is kept"):
        assert sorted(store.read()) == ["a", "joined"]


def test_two_writers_at_once_lose_no_row(tmp_path):
    new_store(tmp_path)
    code = """
        import sys
        from keras_corrinit.experiments._store import Store
        store = Store(sys.argv[1], "x")
        for i in range(300):
            store.append({"key": f"{sys.argv[2]}{i}", "curve": list(range(50))})
        """
    writers = [python(code, tmp_path, name) for name in ("a", "b")]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    rows = Store(tmp_path, "x").read()
    assert len(rows) == 600 and sorted(rows) == sorted(f"{n}{i}" for n in "ab" for i in range(300))


def write_claim(store, key, host, pid, age=0.0):
    path = store.claim_path(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps({"host": host, "pid": pid}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_a_claim_of_another_host_holds_while_its_heartbeat_is_fresh_and_expires_after_its_lease(tmp_path):
    store = new_store(tmp_path, lease_seconds=30)
    path = write_claim(store, "k", "another-host", 1, age=5)
    assert claim_state(path, 30) == "held" and not store.claim("k")
    os.utime(path, (time.time() - 31, time.time() - 31))  # a requeued job's claim: no heartbeat for 31 s
    assert claim_state(path, 30) == "stale" and store.claim("k")
    assert json.loads(open(path).read()) == {"host": socket.gethostname(), "pid": os.getpid()}


def test_a_dead_process_on_this_host_and_an_empty_or_unreadable_claim_are_stale(tmp_path):
    store = new_store(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert claim_state(write_claim(store, "dead", socket.gethostname(), dead.pid)) == "stale"
    assert store.claim("dead")
    for key, text in (("empty", ""), ("garbled", "host 12")):
        path = store.claim_path(key)
        with open(path, "w") as f:
            f.write(text)
        assert claim_state(path) == "stale" and store.claim(key)
    alive = write_claim(store, "alive", socket.gethostname(), os.getpid())
    assert claim_state(alive) == "held" and not store.claim("alive")


def test_a_failed_claim_write_leaves_no_claim(tmp_path, monkeypatch):
    store = new_store(tmp_path)

    def failing_link(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_store.os, "link", failing_link)
    with pytest.raises(OSError, match="No space left"):
        store.claim("k")
    assert os.listdir(tmp_path / "claims") == []  # neither the claim nor its temporary file
    monkeypatch.undo()
    assert store.claim("k")


def test_heartbeats_renew_the_claims_while_the_runs_train(tmp_path, monkeypatch):
    store = new_store(tmp_path, lease_seconds=30)
    assert store.claim("k")
    path = store.claim_path("k")
    os.utime(path, (time.time() - 100, time.time() - 100))
    monkeypatch.setattr(_store, "HEARTBEAT_SECONDS", 0.05)
    with heartbeats(store, ["k"]):
        time.sleep(0.5)
    assert time.time() - os.path.getmtime(path) < 5
    assert claim_state(path, 30) == "held"
