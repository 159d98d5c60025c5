"""``nascomp replay FOLDER``: apply what a search buffered while its tracking server was away.

The search's result folder holds ``nascomp/manifest.json`` (which parent run, which store) and
``mlflow-pending.jsonl`` (the writes not yet applied, in order). Replaying applies them with the
same code the search uses (``nascomp.search.tracking.runlog``), so a trial's run is found by
its tag rather than opened twice, and the parent run gets its front, plot and status last.
"""

from __future__ import annotations

from pathlib import Path

from nascomp.search.driver import finish_search
from nascomp.search.errors import SearchError
from nascomp.search.experiment import TrackingConfig
from nascomp.search.resume import (
    MANIFEST,
    SearchFolder,
    manifest_path,
    record_tracking_uri,
    set_state,
)
from nascomp.search.tracking.runlog import JOURNAL, RunLog, read_journal
from nascomp.search.tracking.store import Tracker


def replay(folder: Path, tracking_uri: str | None = None) -> tuple[int, str]:
    """Apply ``folder``'s journal; return (writes applied, tracking URI). A folder whose
    writes were all applied (no journal) has none to apply."""
    folder = folder.expanduser().resolve()
    if not manifest_path(folder).is_file():
        raise SearchError(f"{folder}: no {MANIFEST} (not a nascomp search folder)")
    search = SearchFolder.read(folder)
    journal = folder / JOURNAL
    if not journal.is_file():  # every write was applied: replaying again is no error
        return 0, search.tracking_uri  # where they were applied, not a store given now
    if tracking_uri:  # a relative sqlite path as the search would record it: absolute
        tracking_uri = TrackingConfig(uri=tracking_uri).resolved_uri()
    tracker = Tracker(tracking_uri or search.tracking_uri, search.experiment_name)
    tracker.check_reachable()
    tracker.check_writable()
    ops = read_journal(journal)
    log = RunLog(
        tracker.client,
        tracker.experiment_id(),
        search.search_run_id,
        journal=journal,
        finisher=lambda status: finish_search(tracker, search.search_run_id, status),
    )
    log.load()
    if not log.flush(force=True):
        raise SearchError(f"replay stopped: {log.last_error}; run it again when the store answers")
    if tracker.uri != search.tracking_uri:
        record_tracking_uri(folder, tracker.uri)  # a later replay or resume says it is there
    if search.state == "unlogged":
        set_state(folder, "finished")
    return len(ops), tracker.uri
