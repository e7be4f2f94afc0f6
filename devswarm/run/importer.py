"""Agents' JSONL records → the run's DuckDB file, in the background and at the end.

DuckDB has one writing process per file: the orchestrating process imports every agent's
records (idempotent upserts), so a killed worker loses nothing and a resumed run duplicates
nothing. Imports run on a background thread so the scheduler never waits on DuckDB.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from devswarm.store.store import open_writer

_log = logging.getLogger("devswarm")
WAIT_SECONDS = 60.0  # a reader (devswarm sql, a report) holds the file a moment at a time


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


class RecordImporter:
    """Imports the JSONL files of one run folder into one DuckDB file."""

    def __init__(self, records: Path, store_path: Path, run_id: str) -> None:
        self.records, self.store_path, self.run_id = records, store_path, run_id
        self._lock = threading.Lock()  # the queue and the thread
        self._writing = threading.RLock()  # one writer of the file at a time in this process
        self._queue: dict[Path, None] = {}
        self._thread: threading.Thread | None = None
        self._imported: dict[Path, tuple[int, int]] = {}  # file -> (size, mtime) at its import

    def import_now(self, paths: list[Path] | None = None) -> int:
        """Import these files (default: all of the run's), retrying while another process
        (a reader) holds the file. Files unchanged since their last import are skipped."""
        files = paths if paths is not None else sorted(self.records.glob("*.jsonl"))
        with self._writing:
            stamps = {p: _stamp(p) for p in files if p.exists()}
            files = [p for p, st in stamps.items() if self._imported.get(p) != st]
            with open_writer(self.store_path, timeout=WAIT_SECONDS) as store:
                n = sum(store.import_jsonl(p) for p in files)
            self._imported.update((p, stamps[p]) for p in files)
            return n

    def import_soon(self, paths: list[Path]) -> None:
        """Import these files on a background thread (batched with whatever else is queued);
        import_now() waits for a batch in progress, so a final import still sees everything."""
        with self._lock:
            self._queue.update(dict.fromkeys(paths))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._drain, name="records-import", daemon=True
                )
                self._thread.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch = list(self._queue)
                self._queue.clear()
                if not batch:
                    self._thread = None
                    return
            try:
                self.import_now(batch)
            except Exception as exc:  # the import at the end of the run tries them all again
                _log.warning("records of run %s not imported yet: %s", self.run_id, exc)
