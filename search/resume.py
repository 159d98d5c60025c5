"""Which search ``nascomp search --resume`` continues, and ``nascomp replay``'s inputs.

Each search writes ``nascomp/manifest.json`` into its Ray Tune result folder
(``<storage>/nascomp-<parent run id>``): the MLflow parent run, the tracking URI and the
experiment, so a restarted driver finds the Tune state, the Optuna study (saved by Tune with
the searcher) and the MLflow runs that belong together. The file's ``state`` is ``running``
until the search ends (``finished``) or stops early (``interrupted``). A search with a
``search.budget`` also keeps there what it has spent (``budget``: unit, limit, spent; written
by ``search/tune/budget.py``), so a resumed search continues with what is left.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nascomp.search.errors import SearchError
from nascomp.search.experiment import Experiment
from nascomp.spaces.constraints import parse_constraints
from nascomp.trainers.settings import METRICS

# In a folder of its own: on --resume, Ray Tune copies every .json and .pkl file at the result
# folder's top level into its staging folder and uploads them back now and then, by a plain copy
# (ray/tune/execution/experiment_state.py: sync_down_experiment_state). A manifest there was
# overwritten with its content from when the search resumed, and read empty mid-copy
# (tests/search/test_budget.py: "Expecting value: line 1 column 1").
MANIFEST = "nascomp/manifest.json"
LOCK = "nascomp/driver.lock"  # held by the driver running the search (hold_folder)
LEGACY_MANIFEST = "nascomp.json"  # where searches before 2026-12-01 kept it


def manifest_path(folder: Path) -> Path:
    """The manifest of result folder ``folder`` (an older search's, where only that exists)."""
    legacy = folder / LEGACY_MANIFEST
    return legacy if legacy.is_file() and not (folder / MANIFEST).is_file() else folder / MANIFEST


# Fields a resumed search may change: where it logs, not what it searches.
_MAY_DIFFER = ("tracking",)


@dataclass(frozen=True)
class SearchFolder:
    path: Path
    search_run_id: str
    tracking_uri: str
    experiment_name: str
    experiment: dict[str, Any]
    state: str
    budget_spent: float = 0.0  # in the unit of the experiment's search.budget
    # The folder's absolute path when the search made it; None in an older manifest
    made_at: str | None = None

    @classmethod
    def read(cls, path: Path) -> SearchFolder:
        """The folder's manifest; SearchError (one line, naming the file) where it is not one
        nascomp wrote: empty, cut short by a full disk or a partial copy, or another's."""
        file = manifest_path(path)
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise SearchError(f"{file} does not read as a nascomp manifest: {exc}") from None
        if not isinstance(data, dict):
            raise SearchError(f"{file} does not read as a nascomp manifest: no JSON object")
        required = {
            "search_run_id": str,
            "tracking_uri": str,
            "experiment_name": str,
            "experiment": dict,
        }
        wrong = [key for key, kind in required.items() if not isinstance(data.get(key), kind)]
        optional = {"state": str, "budget": dict, "folder": str}
        wrong += [k for k, kind in optional.items() if not isinstance(data.get(k, kind()), kind)]
        if wrong:
            raise SearchError(
                f"{file} does not read as a nascomp manifest: {', '.join(wrong)} missing or "
                "of another type"
            )
        try:
            spent = float(data.get("budget", {}).get("spent", 0.0))
        except (TypeError, ValueError):
            raise SearchError(f"{file}: budget.spent is not a number") from None
        return cls(
            path=path,
            search_run_id=data["search_run_id"],
            tracking_uri=data["tracking_uri"],
            experiment_name=data["experiment_name"],
            experiment=data["experiment"],
            state=data.get("state", "running"),
            budget_spent=spent,
            made_at=data.get("folder"),
        )


def folder_name(search_run_id: str) -> str:
    return f"nascomp-{search_run_id[:12]}"


def write_manifest(
    folder: Path, experiment: Experiment, search_run_id: str, state: str = "running"
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "search_run_id": search_run_id,
        "folder": str(folder.resolve()),
        "tracking_uri": experiment.tracking.resolved_uri(),
        "experiment_name": experiment.tracking.experiment,
        "experiment": experiment.model_dump(mode="json"),
        "state": state,
    }
    _write(folder, data)


def set_state(folder: Path, state: str) -> None:
    _write(folder, {**json.loads(manifest_path(folder).read_text()), "state": state})


def record_tracking_uri(folder: Path, uri: str) -> None:
    """Where the search logs now: a resume may log to a store that moved (``--set
    tracking.uri``), and ``nascomp replay`` writes a dead driver's buffered writes to the
    manifest's store. It kept the first one, and replay wrote into the store left behind."""
    _write(folder, {**json.loads(manifest_path(folder).read_text()), "tracking_uri": uri})


def record_experiment(folder: Path, experiment: Experiment) -> None:
    """The experiment a resumed search now runs under: ``--resume --set
    search.budget.wall_s=...`` may change its budget (``differences`` allows nothing else but
    how it is written), which the manifest kept as first given."""
    data = json.loads(manifest_path(folder).read_text())
    _write(folder, {**data, "experiment": experiment.model_dump(mode="json")})


def record_budget(folder: Path, unit: str, limit: float, spent: float) -> None:
    """Keep the budget spent so far in the manifest, where ``--resume`` reads it back."""
    data = json.loads(manifest_path(folder).read_text())
    _write(folder, {**data, "budget": {"unit": unit, "limit": limit, "spent": spent}})


def budget_spent(folder: Path) -> float:
    """The budget a search in ``folder`` has spent (0 when it has recorded none)."""
    return SearchFolder.read(folder).budget_spent


def _write(folder: Path, data: dict[str, Any]) -> None:
    """Replace the manifest atomically: a killed driver leaves the old one or the new one. An
    older search's manifest moves to :data:`MANIFEST` on its first write."""
    path = folder / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2))
    os.replace(partial, path)
    (folder / LEGACY_MANIFEST).unlink(missing_ok=True)


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two experiment dumps; a budget of the same
    kind may change (``--resume --set search.budget.wall_s=1200`` gives an interrupted
    search more time: what it spent is kept)."""
    if not prefix:
        old = _with_budget_of(old, new)
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        if not prefix and key in _MAY_DIFFER:
            continue
        a, b = old.get(key), new.get(key)
        if not prefix and key == "constraints" and _same_constraints(a, b):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name} ({a!r} -> {b!r})")
    return out


def _same_constraints(old: Any, new: Any) -> bool:
    """Whether two experiments' constraints say the same, as written or not: ``size_bytes<=2e4``
    and ``size_bytes <= 20000``, in any order (a resume was refused for the spaces)."""
    try:
        parsed = [
            sorted((c.metric, c.op, c.bound) for c in parse_constraints(given or [], METRICS))
            for given in (old, new)
        ]
    except (TypeError, ValueError):  # an older record's: compared as written
        return old == new
    return parsed[0] == parsed[1]


def _with_budget_of(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with ``new``'s budget when both give one of the same unit."""
    before = (old.get("search") or {}).get("budget")
    after = (new.get("search") or {}).get("budget")
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return old
    units = [{k for k, v in b.items() if v is not None} for b in (before, after)]
    if not units[0] or units[0] != units[1]:
        return old
    return {**old, "search": {**old["search"], "budget": after}}


def find_resumable(experiment: Experiment, which: str) -> SearchFolder:
    """The search to continue: ``which`` is a result folder, or ``latest`` for the newest
    unfinished search of this experiment under ``storage``. Raises SearchError (one line)."""
    if which != "latest":
        path = Path(which).expanduser().resolve()
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            raise SearchError(
                f"--resume {which}: an experiment file, taken as the result folder to resume; "
                f"put it before the flag: nascomp search {which} --resume"
            )
        if not path.exists():  # "no manifest there" sent the user looking inside it
            raise SearchError(
                f"--resume {which}: no such folder; give a search's result folder "
                "(nascomp-..., under storage), or --resume alone for the latest"
            )
        if not manifest_path(path).is_file():
            raise SearchError(
                f"--resume {which}: no {MANIFEST} there (not a nascomp result folder)"
            )
        found = SearchFolder.read(path)
    else:
        storage = Path(experiment.storage).expanduser().resolve()
        candidates, unreadable = [], []
        for folder in sorted(storage.glob("nascomp-*")):
            if manifest_path(folder).is_file():
                try:
                    candidates.append(SearchFolder.read(folder))
                except SearchError:  # another search's broken folder does not block this one
                    unreadable.append(folder.name)
        unfinished = [c for c in candidates if c.state != "finished"]
        same = [c for c in unfinished if not differences(c.experiment, _dump(experiment, c))]
        if not same:
            if unfinished:  # the newest, with where it differs
                newest = max(unfinished, key=lambda c: manifest_path(c.path).stat().st_mtime)
                changed = differences(newest.experiment, _dump(experiment, newest))
                detail = (
                    f"{len(unfinished)} unfinished search(es) differ from this experiment; the "
                    f"newest, {newest.path.name}, at {', '.join(changed[:3])}"
                )
            elif candidates:
                detail = (
                    f"its {len(candidates)} search(es) there all finished, a search that spent "
                    "its budget included"
                )
            else:
                detail = "no search has begun there"
            if unreadable:
                detail += (
                    f"; {len(unreadable)} folder(s) with a manifest that does not read, skipped: "
                    f"{', '.join(unreadable[:3])}"
                )
            raise SearchError(
                f"--resume: no unfinished search of this experiment in {storage} ({detail}); "
                "resume one with the experiment it ran (only tracking and a budget of the same "
                "unit may change), or start a new search without --resume"
            )
        found = max(same, key=lambda c: manifest_path(c.path).stat().st_mtime)
    if found.state == "finished":
        raise SearchError(f"--resume {found.path}: that search already finished")
    made_at = _moved_from(found)
    if made_at is not None:
        raise SearchError(
            f"--resume {found.path}: the search made this folder at {made_at}, and Ray "
            "Tune's saved state names that one for the trials to come (a moved folder's new "
            "trials failed; a copy's wrote into the original): resume the folder at "
            f"{made_at} (move it back there if it moved)"
        )
    _check_only_yours(found.path)
    changed = differences(found.experiment, _dump(experiment, found))
    if changed:
        raise SearchError(
            f"--resume {found.path}: the experiment differs at {', '.join(changed[:3])}; "
            "a resumed search must be the same experiment (only tracking and a budget of the "
            "same unit may change)"
        )
    return found


def _moved_from(found: SearchFolder) -> str | None:
    """Where the search made ``found``'s folder, when that is not where it lies now (None where
    it is, or where that cannot be told). A manifest written before it named its folder
    (``made_at``) has its experiment's storage: the folder was made there (as the search gave
    it, relative to the folder the search ran from where relative). Such a folder, moved, was
    resumed: each new trial failed in Ray Tune's storage set-up."""
    if found.made_at is not None:
        return None if Path(found.made_at) == found.path.resolve() else found.made_at
    storage = found.experiment.get("storage")
    if not isinstance(storage, str) or not storage:
        return None
    made = Path(storage).expanduser() / folder_name(found.search_run_id)
    here = found.path.resolve()
    if made.is_absolute():
        return None if made.resolve() == here else str(made.resolve())
    if ".." in made.parts or here.parts[-len(made.parts) :] == made.parts:
        return None
    return f"{made} (relative to the folder the search ran from)"


def _check_only_yours(folder: Path) -> None:
    """A resume unpickles Ray Tune's state in ``folder`` (``tuner.pkl``, the searcher's
    state, each trial's ``params.pkl``): a pickle someone else planted there runs their code
    as this user. Refuse the folder when it, a folder in it or a pickle there belongs to
    another user or any user may write it."""
    mine = os.getuid()
    paths = [folder, *(p for p in folder.rglob("*") if p.suffix == ".pkl" or p.is_dir())]
    for path in paths:
        try:
            status = path.lstat()
        except OSError:
            continue
        whose = "belongs to another user" if status.st_uid != mine else None
        if whose is None and status.st_mode & 0o002:
            whose = "may be written by every user"
        if whose is not None:
            raise SearchError(
                f"--resume {folder}: {path} {whose}; resuming unpickles Ray Tune's state in "
                "the folder, which would run code planted there: resume only a folder no one "
                "else can write"
            )


def hold_folder(folder: Path) -> IO[str]:
    """Hold result folder ``folder`` for this driver until the returned file is closed (or
    the process ends, however it ends): a second driver resuming the same search while this
    one runs would restart the trials it is training and log every metric twice."""
    import fcntl

    path = folder / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise SearchError(
            f"--resume {folder}: another driver (pid {pid}) is running this search; wait for it "
            "to end, or stop it (Ctrl-C) and resume then"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def check_store_holds(previous: SearchFolder, tracker: Any, uri: str) -> None:
    """A resumed search reopens its runs where it logged them: a tracking URI whose store does
    not hold its parent run is refused before anything starts (and a sqlite file is not
    created by the asking)."""
    run = tracker.stored_run(previous.search_run_id)
    if run is not None and run.info.lifecycle_stage == "deleted":
        # reopening it failed with MLflow's traceback ("must be in the 'active' state")
        raise SearchError(
            f"--resume {previous.path}: search {previous.search_run_id} is deleted in {uri}; "
            f"restore it to resume (`MLFLOW_TRACKING_URI={uri} mlflow runs restore --run-id "
            f"{previous.search_run_id}`, or Restore in the MLflow UI's deleted runs), or start "
            "a new search"
        )
    if run is not None:
        logged_in = tracker.client.get_experiment(run.info.experiment_id).name
        if logged_in != tracker.experiment:
            raise SearchError(
                f"--resume {previous.path}: search {previous.search_run_id} logs to MLflow "
                f"experiment {logged_in!r}, not {tracker.experiment!r}; a resumed search stays "
                f"in its experiment (give --experiment {logged_in}, or none)"
            )
        return
    logged = (previous.experiment.get("tracking") or {}).get("uri") or "the default store"
    raise SearchError(
        f"--resume {previous.path}: {uri} holds no run of search {previous.search_run_id}, "
        f"which logged to {logged}; resume with that tracking URI (the store may move, with "
        "its runs)"
    )


def _dump(experiment: Experiment, previous: SearchFolder | None = None) -> dict[str, Any]:
    """The experiment as its manifest holds one; ``storage`` as ``previous`` wrote it where
    both name the folder it lies in (``r`` from the folder above, ``../r`` from inside it):
    compared as written, a resume from another working folder was refused."""
    dumped = experiment.model_dump(mode="json")
    if previous is not None and previous.made_at is not None:
        here = Path(experiment.storage).expanduser().resolve()
        if here == Path(previous.made_at).parent:
            dumped["storage"] = previous.experiment.get("storage", dumped["storage"])
    return dumped
