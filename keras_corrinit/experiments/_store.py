"""The results store of `compare`: one JSON line per finished run, keyed by everything that sets its result.

Resumable and shared: a run's row is appended when it finishes, in one write, after closing any line a
writer that stopped left open (a line that is not a complete row is skipped with a warning and its run
redone); a claim file per run keeps two writers from training it twice, and expires by a lease (its
heartbeat, renewed while the run trains) whatever the host that wrote it.
"""

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
import warnings

STORE_FORMAT = 3  # 2: the `schedule` column (the budget protocol); 3: `train` and `start`


# A row's columns; the settings (every one part of the key) come first.
SETTING_COLUMNS = (
    "backend",
    "keras_version",
    "package_version",
    "builder",
    "data",
    "arm",
    "arm_identity",
    "seed",
    "epochs",
    "schedule",
    "batch_size",
    "metric",
    "monitor",
    "settings",
)


# `curve`: the test metric per epoch; `train`: the training logs per epoch (loss and metrics); `start`: a
# digest of the weights the run started training from.
OUTCOME_COLUMNS = ("key", "final", "curve", "sign_change", "epoch_seconds", "seconds", "train", "start")


COLUMNS = SETTING_COLUMNS + OUTCOME_COLUMNS


def run_key(row):
    text = json.dumps({name: row[name] for name in SETTING_COLUMNS}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Store:
    """`out/store.json` (format, package version, columns) and `out/runs.jsonl` (one row per line)."""

    def __init__(self, out, version, lease_seconds=None):
        self.out, self.version = os.fspath(out), version
        self.lease_seconds = LEASE_SECONDS if lease_seconds is None else lease_seconds
        self.meta, self.runs = os.path.join(self.out, "store.json"), os.path.join(self.out, "runs.jsonl")

    def read(self):
        """`{key: row}` of the finished runs; refuses a store this version cannot read.

        A line that is not JSON (a writer stopped mid-row, wherever it sits)
        is skipped with a warning naming it, and its run is redone; a complete
        row at its end (a row a writer appended onto it, before 0.4.0 closed
        such lines first) is kept. A JSON line that is not a run, or bad
        metadata, is a `ValueError` naming the file. A key stored twice counts
        once.
        """
        if not os.path.exists(self.meta):
            if os.path.exists(self.runs):
                raise ValueError(f"{self.runs} has no {self.meta}: not a store of this package; pass another `out`.")
            return {}
        meta = self._meta()
        if meta.get("package_version") != self.version or meta.get("format") != STORE_FORMAT:
            raise ValueError(
                f"The results store {self.out} was written by keras_corrinit {meta.get('package_version')} "
                f"(format {meta.get('format')}); this is {self.version} (format {STORE_FORMAT}). Results of "
                "different versions are never mixed: pass another `out`, or move that folder away."
            )
        missing = [c for c in COLUMNS if c not in meta.get("columns", [])]
        if missing:
            raise ValueError(
                f"The results store {self.out} lacks the columns {missing}, so its runs' settings cannot all "
                "be known; pass another `out`, or move that folder away."
            )
        return self._rows() if os.path.exists(self.runs) else {}

    def _meta(self):
        try:
            with open(self.meta) as f:
                meta = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"{self.meta} is not a readable store description ({error}); pass another `out`."
            ) from None
        if not isinstance(meta, dict):
            raise ValueError(f"{self.meta} must hold a JSON object; it holds a {type(meta).__name__}.")
        return meta

    def _rows(self):
        rows = {}
        with open(self.runs, "rb") as f:
            lines = f.readlines()
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError:
                row = _row_at_end(raw)
                kept = "; the complete row after it is kept" if row is not None else ""
                warnings.warn(
                    f"{self.runs}: line {number} is not a complete row (a writer stopped mid-row); it is skipped "
                    f"and its run will be redone{kept}.",
                    stacklevel=4,
                )
                if row is None:
                    continue
            if not isinstance(row, dict) or not isinstance(row.get("key"), str):
                raise ValueError(f"{self.runs}: line {number} is not a run (a JSON object with a 'key').")
            rows.setdefault(row["key"], row)
        return rows

    def prepare(self):
        os.makedirs(self.out, exist_ok=True)
        if not os.path.exists(self.meta):
            _write_new(
                self.meta,
                json.dumps({"format": STORE_FORMAT, "package_version": self.version, "columns": list(COLUMNS)}),
            )

    def claim_path(self, key):
        return os.path.join(self.out, "claims", key)

    def claim(self, key):
        """Whether this process may train the run `key`: an exclusive claim file, written whole.

        A claim held by another process is taken over when it is stale:
        empty or unreadable, its process gone (on this host), or its
        heartbeat (the file's modification time, renewed by `heartbeat`
        while the run trains) older than `lease_seconds`, whatever its host.
        """
        os.makedirs(os.path.join(self.out, "claims"), exist_ok=True)
        path = self.claim_path(key)
        text = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
        for _ in range(2):
            if _write_new(path, text):
                return True
            if claim_state(path, self.lease_seconds) != "stale":
                return False
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # its claimant is gone: the run is free again
        return False

    def heartbeat(self, keys):
        """Renews this process's claims on `keys` (their lease runs from now)."""
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.claim_path(key))

    def release(self, key):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.claim_path(key))

    def append(self, row):
        """Appends one row in one write; a line left open by a writer that stopped is closed first."""
        data = (json.dumps(row) + "\n").encode()
        descriptor = os.open(self.runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if not _ends_with_newline(self.runs):
                data = b"\n" + data
            os.write(descriptor, data)
        finally:
            os.close(descriptor)


# How often a process looks again for runs another process claimed, and renews its own claims.
WAIT_SECONDS = 1.0
HEARTBEAT_SECONDS = 10.0
# A claim whose heartbeat is older than this is stale (its claimant stopped, on any host).
LEASE_SECONDS = 120.0


def _row_at_end(raw):
    """The complete JSON object that ends a damaged line (a row appended onto a half-written one), or None."""
    text = raw.decode("utf-8", "replace").rstrip()
    start = text.find("{", 1)
    while start != -1:
        try:
            return json.loads(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
    return None


def _ends_with_newline(path):
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _write_new(path, text):
    """Creates `path` holding `text`, or returns False if it exists; never leaves it empty or half-written.

    The text is written to a temporary file first and linked into place
    (atomic and exclusive); a failed write leaves no claim behind.
    """
    temporary = f"{path}.{socket.gethostname()}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w") as f:
            f.write(text)
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def claim_state(path, lease_seconds=LEASE_SECONDS):
    """`"held"`, `"stale"` or `"gone"` (no file): what a claim file says of its run."""
    try:
        with open(path) as f:
            text = f.read()
        age = time.time() - os.path.getmtime(path)
    except FileNotFoundError:
        return "gone"
    except OSError:
        return "stale"
    try:
        claim = json.loads(text)
        host, pid = claim["host"], int(claim["pid"])
    except (ValueError, KeyError, TypeError):
        return "stale"  # empty or unreadable: no claimant can be known, and it is never renewed
    if age > lease_seconds:
        return "stale"
    if host == socket.gethostname() and not _alive(pid):
        return "stale"
    return "held"


def describe_claim(path):
    """Who holds a claim, for a message: its host, process and the age of its heartbeat."""
    try:
        with open(path) as f:
            claim = json.loads(f.read())
        age = time.time() - os.path.getmtime(path)
        return f"{path} (host {claim['host']}, process {claim['pid']}, heartbeat {age:.0f} s ago)"
    except (OSError, ValueError, KeyError, TypeError):
        return path


@contextlib.contextmanager
def heartbeats(store, keys):
    """Inside the block a thread renews `store`'s claims on `keys` every `HEARTBEAT_SECONDS` (nothing if None)."""
    if store is None or not keys:
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_SECONDS):
            store.heartbeat(keys)

    thread = threading.Thread(target=beat, name="keras_corrinit-claims", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_runs(out):
    """`{key: row}` of a results store's runs, whatever version wrote it (for reading, never resuming)."""
    store = Store(out, None)
    if not os.path.exists(store.runs):
        raise ValueError(f"{out} is not a results store: it has no runs.jsonl.")
    return store._rows()
