"""The results store of `compare`: one JSON line per finished run, keyed by everything that sets its result.

Resumable and shared: a run's row is appended when it finishes (a half-written last line, from a writer
that stopped, is skipped and redone); a claim file per run keeps two writers from training it twice.
"""

import contextlib
import hashlib
import json
import os
import socket
import warnings

STORE_FORMAT = 2  # 2: the `schedule` column (the budget protocol)


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


OUTCOME_COLUMNS = ("key", "final", "curve", "sign_change", "epoch_seconds", "seconds")


COLUMNS = SETTING_COLUMNS + OUTCOME_COLUMNS


def run_key(row):
    text = json.dumps({name: row[name] for name in SETTING_COLUMNS}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Store:
    """`out/store.json` (format, package version, columns) and `out/runs.jsonl` (one row per line)."""

    def __init__(self, out, version):
        self.out, self.version = os.fspath(out), version
        self.meta, self.runs = os.path.join(self.out, "store.json"), os.path.join(self.out, "runs.jsonl")

    def read(self):
        """`{key: row}` of the finished runs; refuses a store this version cannot read.

        A half-written last line (a writer stopped mid-row) is skipped with a
        warning, and cut off when the store is next written, so its run is
        redone; any other malformed line or metadata is a `ValueError` naming
        the file. A key stored twice counts once.
        """
        self.cut_at = None
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
        rows, offset = {}, 0
        with open(self.runs, "rb") as f:
            lines = f.readlines()
        for number, raw in enumerate(lines, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError:
                if number == len(lines):
                    warnings.warn(
                        f"{self.runs}: line {number} is half-written (a writer stopped mid-row); it is skipped and "
                        "its run will be redone.",
                        stacklevel=4,
                    )
                    self.cut_at = start
                    break
                raise ValueError(
                    f"{self.runs}: line {number} is not JSON; the store is damaged (move that folder away)."
                ) from None
            if not isinstance(row, dict) or not isinstance(row.get("key"), str):
                raise ValueError(f"{self.runs}: line {number} is not a run (a JSON object with a 'key').")
            rows.setdefault(row["key"], row)
        return rows

    def prepare(self):
        os.makedirs(self.out, exist_ok=True)
        if not os.path.exists(self.meta):
            with open(self.meta, "w") as f:
                json.dump({"format": STORE_FORMAT, "package_version": self.version, "columns": list(COLUMNS)}, f)
        if getattr(self, "cut_at", None) is not None:
            with open(self.runs, "r+b") as f:
                f.truncate(self.cut_at)  # the half-written line goes; its run is redone
            self.cut_at = None

    def _claim_path(self, key):
        return os.path.join(self.out, "claims", key)

    def claim(self, key):
        """Whether this process may train the run `key` (an exclusive claim file; a dead claimant's is taken over)."""
        os.makedirs(os.path.join(self.out, "claims"), exist_ok=True)
        path = self._claim_path(key)
        for _ in range(2):
            try:
                descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not claimant_gone(path):
                    return False
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)  # its claimant died: the run is free again
                continue
            with os.fdopen(descriptor, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}")
            return True
        return False

    def release(self, key):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._claim_path(key))

    def append(self, row):
        with open(self.runs, "a") as f:
            f.write(json.dumps(row) + "\n")


# How often a process waits for runs another process on the same store claimed.
WAIT_SECONDS = 1.0


def claimant_gone(path):
    """Whether the process that wrote a claim file is gone (on this host; another host's claim is kept)."""
    try:
        with open(path) as f:
            host, pid = f.read().split()
        pid = int(pid)
    except (OSError, ValueError):
        return False  # being written, or not ours to judge
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def read_runs(out):
    """`{key: row}` of a results store's runs, whatever version wrote it (for reading, never resuming)."""
    store = Store(out, None)
    if not os.path.exists(store.runs):
        raise ValueError(f"{out} is not a results store: it has no runs.jsonl.")
    return store._rows()
