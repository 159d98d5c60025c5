"""Everything nascomp says to MLflow, in one module.

Layout: one parent run per search (tag ``nascomp.role=search``) holding the experiment file, the
space, the git commit and the final Pareto front; one child run per trial, nested with the
``mlflow.parentRunId`` tag, holding the trial's flat config as params, per-epoch metrics as
steps and the final metrics. Only the driver writes (a Ray Tune callback), so a sqlite store
sees a single writer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from nascomp.search.errors import TrackingError
from nascomp.search.paths import check_writable_folder
from nascomp.search.tracking.models import (
    ONNX_MODEL_DIR,
    SHIPPED_MODEL_DIR,
    register,
    save_onnx_model,
)
from nascomp.search.tracking.pages import runs_page
from nascomp.search.tracking.params import (
    CONFIG_ARTIFACT,
    PREPROCESS_ARTIFACT,
    config_document,
    config_from_document,
    decode_param,
    display_params,
)
from nascomp.search.tracking.runlog import PARENT_TAG, TRIAL_TAG

ROLE_TAG = "nascomp.role"
STATUS_TAG = "nascomp.status"
OBJECTIVES_TAG = "nascomp.objectives"
CONSTRAINTS_TAG = "nascomp.constraints"
# The search's data.root as it was read (trainers.listing): reproduce tells changed data apart
DATA_FILES_TAG = "nascomp.data_files"
CODE_FILES_TAG = "nascomp.code_files"  # {"module:function": SHA-256 of its source file}
_TAG_LIMIT = 8000  # MLflow's limit on a tag's value (mlflow.utils.validation)
FEASIBLE_TAG = "nascomp.feasible"
HYPERVOLUME = "hypervolume"  # the parent run's metric, one step per ended trial
SOURCE_TAG = "nascomp.reproduced_from"
NOTE_TAG = "mlflow.note.content"  # a run's description, rendered as markdown by the UI
RUN_NAME_TAG = "mlflow.runName"  # setting it renames the run
# MLflow's UI opens an experiment by its kind; without one a new experiment opens on the GenAI
# workspace, which hides training runs. The UI reads this tag from MLflow 3.2 on (its bundles
# of 3.0 and 3.1 never mention it, those of 3.2, 3.3, 3.5 and 3.17 do); to 3.0 and 3.1 it is
# an ordinary tag, and `nascomp ui` prints the runs page's URL for every version.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


@dataclass(frozen=True)
class TrialRecord:
    run_id: str
    trial_id: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)
    experiment_id: str = ""  # the MLflow experiment holding the run
    ended_ms: int = 0  # when the run ended (MLflow's end_time); 0 while it runs


def _what_path_is(uri: str, scheme: str) -> str:
    """What a tracking URI without a store's scheme names, for its one-line error."""
    if scheme not in ("", "file"):
        return f"has a scheme MLflow has no store for ({scheme!r})"
    path = Path(uri.removeprefix("file://"))
    if path.is_file():
        return "is a file, not a URI (a sqlite file is given as sqlite:///PATH)"
    if path.is_dir():
        return "is a folder: MLflow's file store is closed to new features (MLflow 3 refuses it)"
    return "is a path, not a URI"


# The package that installs a database driver SQLAlchemy imports, where the names differ.
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "pymssql": "pymssql",
}
_SECRET_QUERY_KEYS = ("pass", "pwd", "secret", "token", "key", "auth")


def without_credentials(uri: str) -> str:
    """``uri`` as nascomp prints and records it: without a user and password
    (``https://me:secret@host``, ``postgresql://me:secret@host/db``) and with the values of
    query keys that name a secret (``?password=...``, ``?token=...``) left out."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        return uri.split("@", 1)[-1] if "@" in uri.split("?", 1)[0] else uri
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret = [any(word in k.lower() for word in _SECRET_QUERY_KEYS) for k, _ in pairs]
    if parts.username is None and parts.password is None and not any(secret):
        return uri  # as given (urlunsplit would write sqlite:///x as sqlite:/x)
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        parts = parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host)
    if any(secret):
        query = [(k, "***" if hide else v) for (k, v), hide in zip(pairs, secret, strict=True)]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)


def model_name_refusal(name: str) -> str | None:
    """Why the Model Registry refuses ``name``, by MLflow's own rule, if it does."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(name)
    except MlflowException as exc:
        return " ".join(exc.message.split())
    return None


def _health_request(uri: str, path: str = "health") -> urllib.request.Request:
    """A GET of an MLflow server's /health (or another of its plain pages); a user and
    password in ``uri`` go in the Authorization header, as MLflow's own client sends them
    (urllib would take them for the host's name)."""
    import base64
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    url = f"{without_credentials(uri).rstrip('/')}/{path}"
    user, password = parts.username, parts.password
    if user is None:  # MLflow's client sends these when the URI names no user
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if user is None:
            return urllib.request.Request(url)
    else:
        user, password = unquote(user), unquote(password or "")
    pair = f"{user}:{password or ''}".encode()
    header = f"Basic {base64.b64encode(pair).decode()}"
    return urllib.request.Request(url, headers={"Authorization": header})


def _scheme(uri: str) -> str:
    """The URI's scheme without its driver: ``postgresql`` of ``postgresql+psycopg2://``."""
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


@contextlib.contextmanager
def _store_init_lock(uri: str) -> Iterator[None]:
    """An exclusive lock per database URI among this user's processes on this machine (a file
    in a folder of the user's own in the temp folder, as MLflow's own
    ``_safe_initialize_tables`` takes, which its store does not). The files were in the temp
    folder itself, where another user's file of the same store cannot be opened: every
    command ended in a traceback. A lock that cannot be had is done without."""
    import fcntl
    import hashlib

    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"nascomp-locks-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        if folder.is_symlink() or folder.stat().st_uid != os.getuid():
            raise PermissionError(f"{folder} is not this user's own")  # planted by another
        handle = open(folder / f"store-{digest}.lock", "a")  # noqa: SIM115 (closed below)
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class ArtifactMissing(ValueError):
    """A run's artifact that is listed, or expected, and cannot be read."""


def _from_environment(uri: str) -> bool:
    """Whether ``uri`` is ``$MLFLOW_TRACKING_URI``'s value (a relative sqlite path made
    absolute, as ``TrackingConfig.resolved_uri`` makes it)."""
    given = os.environ.get("MLFLOW_TRACKING_URI")
    if not given:
        return False
    if given.startswith("sqlite:///") and not given.startswith("sqlite:////"):
        given = "sqlite:///" + str(Path(given[len("sqlite:///") :]).resolve())
    return uri == given


class Tracker:
    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.experiment = experiment
        # What errors about the URI name: the variable where the URI is its value (a user who
        # set no tracking.uri was told to fix one).
        self.field = "MLFLOW_TRACKING_URI" if _from_environment(uri) else "tracking.uri"

    @property
    def shown_uri(self) -> str:
        """The store's URI as messages and records show it (:func:`without_credentials`)."""
        return without_credentials(self.uri)

    @functools.cached_property
    def client(self) -> MlflowClient:
        # Lazy: a sqlite store is created on first use, and a search that fails its checks
        # (tracking server, Ray address) must leave nothing behind.
        from mlflow.store.db.db_types import DATABASE_ENGINES

        if _scheme(self.uri) not in DATABASE_ENGINES:
            return MlflowClient(tracking_uri=self.uri)
        # MLflow's database store creates its tables unlocked when it first opens a new
        # database (in MlflowClient's constructor): two searches started together in a folder
        # without mlflow.db crashed in its migrations ("duplicate column name: step"). One
        # process at a time opens it here.
        with _store_init_lock(self.uri):
            return MlflowClient(tracking_uri=self.uri)

    # ------------------------------------------------------------------ store and experiment
    def import_store_code(self) -> None:
        """Import the code of this URI's kind of store, without opening the store (a sqlite
        file is created on first use). Without it the store's first use pays that import:
        0.7 s for sqlite's SQLAlchemy store on a 2-core machine (profiled). The driver calls
        this while its local Ray is still starting (``search.driver``)."""
        from mlflow.store.db.db_types import DATABASE_ENGINES

        scheme = _scheme(self.uri) if ":" in self.uri else ""
        if scheme in DATABASE_ENGINES:
            importlib.import_module("mlflow.store.tracking.sqlalchemy_store")
        elif scheme in ("http", "https"):
            importlib.import_module("mlflow.store.tracking.rest_store")
        else:  # a folder (file:///..., a path): MLflow's file store
            importlib.import_module("mlflow.store.tracking.file_store")

    def check_reachable(self, timeout_s: float = 5.0) -> None:
        """Fail early, before any trial starts or any run exists, when the URI names no store
        nascomp can use, or an HTTP tracking server does not answer."""
        from mlflow.store.db.db_types import DATABASE_ENGINES

        scheme = _scheme(self.uri)  # "databricks" has no //
        if "://" not in self.uri and scheme != "databricks":
            scheme = ""
        if scheme in ("http", "https"):
            from urllib.parse import urlsplit

            try:
                urlsplit(self.uri).port  # noqa: B018 (an unclosed [ or a port not a number)
            except ValueError as exc:
                raise TrackingError(
                    f"{self.field}: {self.shown_uri!r} is not a valid address ({exc})"
                ) from None
        if scheme not in (*DATABASE_ENGINES, "http", "https", "databricks"):
            raise TrackingError(
                f"{self.field}: {self.shown_uri!r} {_what_path_is(self.uri, scheme)}; give "
                "sqlite:///PATH/mlflow.db, a database URL (postgresql://...) or an MLflow "
                "server's http(s):// address"
            )
        if scheme in DATABASE_ENGINES and scheme != "sqlite":
            self._check_database_driver(scheme)
        if scheme == "sqlite":
            self._check_sqlite_form()
            self.sqlite_tables()  # refuses a file that is no MLflow store
            return  # a new store's file is made by the first write, not by a check
        if self.uri.startswith(("http://", "https://")):
            self._check_health(timeout_s)
        self._check_answers()
        if self.uri.startswith(("http://", "https://")):
            self._check_version(timeout_s)

    def _check_sqlite_form(self) -> None:
        """``sqlite://mlflow.db`` (two slashes: a host, which SQLite has not) failed in
        SQLAlchemy with a traceback; ``sqlite://`` and ``sqlite:///:memory:`` are databases
        that end with each connection, and a search logged to one lost every run, exit 0."""
        rest = self.uri[len("sqlite://") :]
        db = rest[1:].split("?", 1)[0] if rest.startswith("/") else None
        if not rest or db in ("", ":memory:") or ":memory:" in rest or "mode=memory" in rest:
            raise TrackingError(
                f"{self.field}: {self.shown_uri!r} is an in-memory database, which ends with "
                "each connection (every run would be lost); give sqlite:///PATH/mlflow.db"
            )
        if db is None:
            raise TrackingError(
                f"{self.field}: {self.shown_uri!r} is no sqlite store's address: write "
                "sqlite:///RELATIVE/PATH.db or sqlite:////ABSOLUTE/PATH.db (three slashes, "
                "then the path)"
            )

    def _check_answers(self) -> None:
        """One read of the store, which must answer as MLflow does: a web server that
        answers /health but is no MLflow server, or ``databricks`` without credentials, failed
        at the first write with MLflow's traceback (a search's after its header)."""
        quiet = logging.getLogger("mlflow.utils.databricks_utils")  # its own warning, first
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            self.client.search_experiments(max_results=1)
        except Exception as exc:
            # MLflow's auth app leaves /health open: a server that wants a user and password
            # says so here first (HTTP 401 or 403 in MLflow's message, or, where the refusal's
            # body is JSON and the message names no status, to a read of the API of our own)
            said = re.search(r"error code (40[13]) != 200", str(exc))
            status = said[1] if said is not None else self._api_refuses()
            if status is not None:
                raise self._refused(status) from None
            first = " ".join(str(exc).split())[:240] or type(exc).__name__
            raise TrackingError(
                f"{self.field}: {self.shown_uri} does not answer as an MLflow tracking store "
                f"({type(exc).__name__}: {first})"
            ) from None
        finally:
            quiet.setLevel(level)

    def _api_refuses(self) -> str | None:
        """The HTTP status (401, 403) with which an http(s) server refuses a read of its API,
        as MLflow's client sends it; None where it does not (MLflow's message names no status
        where the refusal's body is JSON)."""
        if not self.uri.startswith(("http://", "https://")):
            return None
        try:
            request = _health_request(self.uri, "api/2.0/mlflow/experiments/search?max_results=1")
            with urllib.request.urlopen(request, timeout=5):
                return None
        except urllib.error.HTTPError as exc:
            return str(exc.code) if exc.code in (401, 403) else None
        except (urllib.error.URLError, OSError):
            return None

    def _refused(self, status: str) -> TrackingError:
        """The server wants a user and password (``status``: its HTTP status)."""
        return TrackingError(
            f"tracking server {self.shown_uri} refused the request (HTTP {status}): give its user "
            "and password (http://USER:PASSWORD@host, or MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD)"
        )

    def check_experiment_active(self, experiment_id: str | None = None) -> None:
        """The experiment (by id, else by this tracker's name) must not be in MLflow's
        deleted state: a search in it, or a reproduction logged next to its trial (after the
        whole training), failed with MLflow's traceback, and the reading commands said it held
        no search. A sqlite store's file not made yet holds none (and is not made here)."""
        path = self._sqlite_file()
        if path is not None and not path.is_file():
            return
        if experiment_id is not None:
            found = self.client.get_experiment(experiment_id)
        else:
            found = self.client.get_experiment_by_name(self.experiment)
        if found is not None and found.lifecycle_stage == "deleted":
            raise TrackingError(
                f"experiment {found.name!r} is deleted in {self.shown_uri}: restore it "
                f"(mlflow experiments restore --experiment-id {found.experiment_id}) or name "
                "another (--experiment NAME, tracking.experiment)"
            )

    def _check_health(self, timeout_s: float) -> None:
        """An http(s) store's server must answer its /health."""
        try:
            with urllib.request.urlopen(_health_request(self.uri), timeout=timeout_s) as reply:
                if reply.status == 200:
                    return
        except urllib.error.HTTPError as exc:  # it answered: up, and it said no
            if exc.code in (401, 403):
                raise self._refused(str(exc.code)) from None
            raise TrackingError(
                f"tracking server {self.shown_uri} answered /health with HTTP {exc.code}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(
                f"tracking server {self.shown_uri} is unreachable ({exc}); start it or fix "
                "--tracking-uri"
            ) from None
        raise TrackingError(f"tracking server {self.shown_uri} answered /health with an error")

    def _check_version(self, timeout_s: float) -> None:
        """An MLflow server answers /version with its version. A web server that answers
        every path with ``{}`` passed /health and the search of experiments (MLflow's client
        reads ``{}`` as none), and the search's first write failed with MLflow's traceback."""
        try:
            with urllib.request.urlopen(
                _health_request(self.uri, "version"), timeout=timeout_s
            ) as reply:
                said = reply.read(200).decode("utf-8", "replace").strip()
        except urllib.error.HTTPError as exc:
            said = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            said = str(exc)
        if not re.fullmatch(r"\d+\.\d+[\w.+-]*", said):
            raise TrackingError(
                f"{self.field}: {self.shown_uri} is no MLflow tracking server: its /version "
                f"answered {' '.join(said.split())[:60]!r}, not an MLflow version"
            )

    def sqlite_tables(self) -> list[str] | None:
        """The tables of an existing sqlite store's file, read without writing it (None where
        the store is not a sqlite file, or the file does not exist yet). A file that is no
        SQLite database, or a database of other tables than MLflow's, is a TrackingError:
        MLflow would write its 60 tables into a user's own database, or fail with a
        traceback."""
        import sqlite3

        path = self._sqlite_file()
        if path is None or not path.is_file():
            return None
        # Under the lock a search holds while it creates a new store's tables: read part-way,
        # a store being made looks like a database of other tables.
        try:
            with (
                _store_init_lock(self.uri),
                contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db,
            ):
                rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        except sqlite3.Error as exc:
            raise TrackingError(
                f"{self.field}: {path} is not a SQLite database ({exc}); give an MLflow "
                "store's file, or a new path for one"
            ) from None
        tables = sorted(str(name) for (name,) in rows)
        if tables and not {"alembic_version", "experiments", "runs"} <= set(tables):
            shown = ", ".join(tables[:4]) + (", ..." if len(tables) > 4 else "")
            raise TrackingError(
                f"{self.field}: {path} is a SQLite database of other tables ({shown}), not an "
                "MLflow store; give an MLflow store's file, or a new path for one"
            )
        return tables

    def _check_database_driver(self, scheme: str) -> None:
        """A database URL whose driver is not installed failed in MLflow's first write, with
        a traceback, after the teacher had trained: one line now, before anything runs."""
        import sqlalchemy

        try:
            sqlalchemy.create_engine(self.uri).dispose()  # imports the driver; no connection
        except ModuleNotFoundError as exc:
            package = _DRIVER_PACKAGES.get(exc.name or "", exc.name)
            raise TrackingError(
                f"{self.field}: {self.shown_uri} needs the {scheme} driver {exc.name!r}, which "
                f"is not installed here: pip install '{package}'"
            ) from None
        except Exception as exc:  # sqlalchemy's ArgumentError: not a URL it reads
            first = (str(exc).splitlines() or [""])[0]
            raise TrackingError(
                f"{self.field}: {self.shown_uri} is no database URL SQLAlchemy reads ({first})"
            ) from None

    def check_writable(self) -> None:
        """For a command that writes runs: a sqlite store's file must be one this user can
        write, or be creatable (MLflow makes its folders); else MLflow's traceback comes late
        (a search's, after the teacher has trained). Reading commands do not ask: a store on a
        read-only mount reads."""
        path = self._sqlite_file()
        if path is None:
            return
        if path.is_dir():
            raise TrackingError(f"{self.field}: {path} is a folder; give the store's file in it")
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise TrackingError(f"{self.field}: this user cannot write {path}")
        check_writable_folder(path.parent, self.field)

    def experiment_id(self, create: bool = False) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        if not create:
            names = sorted(e.name for e in self.client.search_experiments() if e.name != "Default")
            there = f"; experiments there: {', '.join(names)}" if names else ""
            raise TrackingError(
                f"no experiment named {self.experiment!r} in {self.shown_uri}{there} (--experiment "
                "NAME: the experiment file's tracking.experiment)"
            )
        return self.client.create_experiment(
            self.experiment, artifact_location=self._artifact_root(), tags=EXPERIMENT_KIND
        )

    def download(self, run_id: str, name: str, folder: Path) -> Path:
        """Artifact ``name`` of run ``run_id``, downloaded into ``folder``. One that cannot be
        read (its folder listed, the file deleted) is an ``ArtifactMissing`` naming the run
        and the file in one line, not MLflow's traceback."""
        from mlflow.exceptions import MlflowException

        try:
            return Path(self.client.download_artifacts(run_id, name, str(folder)))
        except (MlflowException, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ArtifactMissing(f"run {run_id}: its {name} cannot be read ({first})") from None

    def default_experiment(self, run_id: str | None = None) -> str | None:
        """The experiment a reading command means when not told: the one holding ``run_id``
        (a run id names its experiment), else the store's only experiment with searches in it
        when ``self.experiment`` is not there; None to keep ``self.experiment``."""
        from mlflow.exceptions import MlflowException

        if run_id:
            try:
                experiment_id = self.client.get_run(run_id).info.experiment_id
            except MlflowException:
                return None  # not a run of this store: the command says so itself
            return self.client.get_experiment(experiment_id).name
        if self.client.get_experiment_by_name(self.experiment) is not None:
            return None
        searched = self.searched_experiments()
        return searched[0] if len(searched) == 1 else None

    def searched_experiments(self) -> list[str]:
        """The store's experiments that hold searches, the one with the latest search first."""
        latest: dict[str, int] = {}
        for experiment in self.client.search_experiments():
            runs = self.client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.`{ROLE_TAG}` = 'search'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if runs:
                latest[experiment.name] = runs[0].info.start_time or 0
        return sorted(latest, key=lambda name: -latest[name])

    def _artifact_root(self) -> str | None:
        # With a sqlite file, keep artifacts next to it (not in whatever folder we run from),
        # so `nascomp ui` started anywhere finds them. A server chooses its own root.
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri[len("sqlite:///") :])
            return (db.parent / "mlartifacts" / self.experiment).resolve().as_uri()
        return None

    def runs_url(self, base_url: str | None = None) -> str:
        shown = self.shown_uri
        base = base_url or (shown if shown.startswith("http") else "http://127.0.0.1:5000")
        return runs_page(self.experiment_id(), base)

    # ------------------------------------------------------------------ the search's parent run
    def start_search(
        self,
        *,
        run_name: str,
        experiment_yaml: str,
        space: list[dict],
        objectives: dict[str, str],
        git_commit: str | None,
        constraints: list[str] | None = None,
        data_files: str | None = None,
        code_files: dict[str, str] | None = None,
    ) -> str:
        tags = {
            ROLE_TAG: "search",
            OBJECTIVES_TAG: json.dumps(objectives),
            CONSTRAINTS_TAG: json.dumps(list(constraints or [])),
        }
        if data_files is not None:
            tags[DATA_FILES_TAG] = data_files
        code = json.dumps(code_files or {}, sort_keys=True)
        if code_files and len(code) <= _TAG_LIMIT:  # a space of very many builders: unrecorded
            tags[CODE_FILES_TAG] = code
        if git_commit:
            tags["mlflow.source.git.commit"] = git_commit
        experiment_id = self.experiment_id(create=True)
        for key, value in EXPERIMENT_KIND.items():
            # An experiment made by an older nascomp, or by hand, may lack it.
            if key not in self.client.get_experiment(experiment_id).tags:
                self.client.set_experiment_tag(experiment_id, key, value)
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        try:
            self.client.log_text(run_id, experiment_yaml, "experiment.yaml")
            self.client.log_dict(run_id, {"params": space}, "space.json")
        except BaseException:  # Ctrl-C, or a store gone: no half-made search left RUNNING
            with contextlib.suppress(Exception):
                self.client.set_terminated(run_id, "KILLED")
                self.client.delete_run(run_id)
            raise
        return run_id

    def log_search_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()]
        )

    def finish_search(
        self,
        run_id: str,
        front: list[TrialRecord],
        objectives: dict[str, str],
        status: str,
        files: Sequence[Path] = (),
        note: str | None = None,
        constraints: Sequence[str] = (),
    ) -> None:
        """Log the front (JSON, with the ``constraints`` its members meet, as ``nascomp
        pareto --json`` prints it), ``files`` (the Pareto plots) and the run's description
        (``note``, markdown), then end the run."""
        if front:
            rows = [
                {
                    "rank": i + 1,
                    "run_id": r.run_id,
                    **{m: r.metrics.get(m) for m in objectives},
                    "params": r.params,
                }
                for i, r in enumerate(front)
            ]
            document = {"objectives": objectives, "constraints": list(constraints), "front": rows}
            self.client.log_dict(run_id, document, "pareto_front.json")
        for path in files:
            self.client.log_artifact(run_id, str(path))
        if note is not None:
            self.client.set_tag(run_id, NOTE_TAG, note)
        self.client.set_terminated(run_id, status)

    # ------------------------------------------------------------------ reading back
    def latest_search(self) -> str:
        runs = self.client.search_runs(
            [self.experiment_id()],
            filter_string=f"tags.`{ROLE_TAG}` = 'search'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            raise TrackingError(f"experiment {self.experiment!r} has no nascomp search yet")
        return runs[0].info.run_id

    def objectives(self, search_run_id: str) -> dict[str, str]:
        tags = self._run(search_run_id).data.tags
        if OBJECTIVES_TAG not in tags:
            raise TrackingError(
                f"run {search_run_id!r} is not a nascomp search (see `nascomp pareto` without "
                "--search-run for the latest one)"
            )
        return json.loads(tags[OBJECTIVES_TAG])

    def constraints(self, search_run_id: str) -> list[str]:
        # Searches logged before constraints existed have no tag: no constraints.
        tag = self._run(search_run_id).data.tags.get(CONSTRAINTS_TAG)
        return json.loads(tag) if tag else []

    def trials(self, search_run_id: str) -> list[TrialRecord]:
        runs = self.client.search_runs(
            [self.experiment_id()],
            filter_string=f"tags.`{PARENT_TAG}` = '{search_run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=50000,
        )
        return [record_of(run) for run in runs]

    def trial_record(self, run_id: str) -> TrialRecord:
        """The trial run ``run_id``; a TrackingError naming the store when it has no such run,
        and saying so when it is a search's run, not a trial's."""
        run = self._run(run_id)
        if run.data.tags.get(ROLE_TAG) == "search":
            raise TrackingError(
                f"run {run_id!r} is a search, not one of its trials (`nascomp pareto "
                f"--search-run {run_id}` lists its front's run ids)"
            )
        return record_of(run)

    def resolve_run_id(self, given: str, role: str | None = None) -> str:
        """The run id ``given`` names: itself; the run of the trial whose id it is (the 8
        characters a trial line shows, Ray Tune's trial id: the run's ``nascomp.trial_id``
        tag); or the one run whose id starts with it. A TrackingError when several do. With
        ``role`` (``"search"`` for ``--search-run``), only runs of that role count: a trial's
        run whose id starts alike does not make a search's prefix ambiguous."""
        import re

        from mlflow.entities import ViewType

        # pasted with a space, or as a trial line shows it ("trial 280713f3")
        wanted = re.sub(r"^trial\s+", "", given.strip().lower())
        if not re.fullmatch(r"[0-9a-f]{1,31}", wanted):
            return wanted if re.fullmatch(r"[0-9a-f]{32}", wanted) else given.strip()
        with contextlib.suppress(Exception):
            self.client.get_run(wanted)
            return wanted
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        if not experiments:
            return given
        matches = []
        if role is None:
            trials = self.client.search_runs(
                experiments,
                f"tags.`{TRIAL_TAG}` = '{wanted}'",
                ViewType.ACTIVE_ONLY,
                max_results=10,
            )
            # a trial id names its trial's run (a search's or a reproduction's run is no trial's)
            matches = [
                r.info.run_id
                for r in trials
                if r.data.tags.get(ROLE_TAG) not in ("search", "reproduce")
            ]
        of_role = f"tags.`{ROLE_TAG}` = '{role}'" if role else ""
        token = None
        while not matches:
            page = self.client.search_runs(
                experiments,
                of_role,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=5000,
                page_token=token,
            )
            matches += [r.info.run_id for r in page if r.info.run_id.startswith(wanted)]
            token = page.token
            if not token:
                break
        if not matches and role is not None:
            # a trial's id, or the start of another run's: say what it names
            other = self.resolve_run_id(given)
            if other != given:
                parent = self.client.get_run(other).data.tags.get(PARENT_TAG)
                of = f", a trial of search {parent}" if parent else ""
                raise TrackingError(
                    f"run {given!r} is run {other}{of}, not a {role}'s run: give the "
                    f"{role}'s id (`nascomp pareto` prints the latest search's)"
                )
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            runs = f"{role} runs'" if role else "runs'"
            raise TrackingError(
                f"run {given!r}: {len(matches)} {runs} ids start with it "
                f"({', '.join(sorted(matches)[:3])}...); give more of the id"
            )
        return given  # _run names the store that has no such run

    def _run(self, run_id: str) -> Any:
        """``get_run``, with a TrackingError naming the store when it has no such run."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "INVALID_PARAMETER_VALUE":  # MLflow's traceback before
                raise TrackingError(
                    f"{run_id!r} is not a run id: give the 32 hex digits of a run (see `nascomp "
                    "pareto`), or the 8 of a trial as its line shows them"
                ) from None
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise TrackingError(
                f"run {run_id!r} is not in the tracking store {self.shown_uri} (see `nascomp "
                "pareto` for the front's run ids; --tracking-uri picks another store)"
            ) from None

    def trial_config(self, record: TrialRecord) -> dict[str, Any]:
        """The trial's flat config exactly as the search ran it: the JSON artifact, or for
        runs logged before it existed, the params decoded by a guess of their types."""
        logged = self.logged_config(record)
        return logged if logged is not None else dict(record.params)

    def check_artifacts_readable(self, run_id: str) -> None:
        """A run whose artifacts an MLflow server serves (``mlflow-artifacts:`` addresses,
        its ``--artifacts-destination``) reads through that server only: read in the server's
        database directly, MLflow failed with a traceback."""
        artifact_uri = self.client.get_run(run_id).info.artifact_uri or ""
        if artifact_uri.startswith("mlflow-artifacts:") and not self.uri.startswith(
            ("http://", "https://")
        ):
            raise TrackingError(
                f"run {run_id}'s files are served by the MLflow server that logged them "
                f"({artifact_uri.split('/artifacts', 1)[0]}...); give that server's http(s):// "
                f"address as --tracking-uri, not its store {self.shown_uri}"
            )

    def served_files_note(self) -> str | None:
        """For ``nascomp ui`` on a store file: a note where the experiment's runs keep their
        files on the MLflow server that logged them (``mlflow-artifacts:``), which a UI started
        on the file alone lists without them, saying nothing."""
        if self.uri.startswith(("http://", "https://")):
            return None
        found = self.client.get_experiment_by_name(self.experiment)
        runs = self.client.search_runs([found.experiment_id], max_results=1) if found else []
        if not runs or not (runs[0].info.artifact_uri or "").startswith("mlflow-artifacts:"):
            return None
        return (
            "note: this store's runs keep their files on the MLflow server that logged them "
            "(mlflow-artifacts:); this UI lists them without their files and models: open "
            "that server's UI for those"
        )

    def logged_config(self, record: TrialRecord) -> dict[str, Any] | None:
        """The trial's flat config as the search ran it (its JSON artifact); None when the run
        holds none (its artifacts deleted, or logged before nascomp wrote it)."""
        import tempfile

        self.check_artifacts_readable(record.run_id)
        listed = {item.path for item in self.client.list_artifacts(record.run_id)}
        if CONFIG_ARTIFACT not in listed:
            return None
        with tempfile.TemporaryDirectory() as folder:
            path = self.client.download_artifacts(record.run_id, CONFIG_ARTIFACT, folder)
            try:
                return config_from_document(json.loads(Path(path).read_text()))
            except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
                # It named neither the file nor the run ("Expecting value: line 1 column 1").
                raise ValueError(
                    f"run {record.run_id}: its {CONFIG_ARTIFACT} does not read as the trial's "
                    f"config ({str(exc).splitlines()[0]}): the run's artifacts were changed or "
                    "damaged"
                ) from None

    # ------------------------------------------------------------------ reproduce
    def log_reproduction(
        self,
        source: TrialRecord,
        config: dict[str, Any],
        metrics: dict[str, float],
        model: Any,
        example: Any,
        onnx: bytes | None = None,
        info: dict[str, str] | None = None,
        preprocess: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        """Log a reproduction as a run of its own; returns (its run id, its PyTorch model's
        URI). With ``onnx``, the run also holds the ONNX file as an MLflow model; ``info``, the
        trial's word-valued facts, become ``nascomp.<key>`` tags as a trial's do;
        ``preprocess``, how to feed the model, is the run's ``preprocess.json`` and is in the
        ONNX model's folder (what a Model Registry version downloads)."""
        import mlflow.pytorch

        # Next to the trial it reproduces: a run id names its experiment, whatever the
        # --experiment default.
        run = self.client.create_run(
            source.experiment_id or self.experiment_id(),
            run_name=f"reproduce-{source.run_id[:8]}",
            tags={
                SOURCE_TAG: source.run_id,
                ROLE_TAG: "reproduce",
                **{f"nascomp.{key}": str(value) for key, value in (info or {}).items()},
            },
        )
        run_id = run.info.run_id
        self.client.log_batch(
            run_id, params=[Param(k, v) for k, v in display_params(config).items()]
        )
        self.client.log_dict(run_id, config_document(config), CONFIG_ARTIFACT)
        if preprocess is not None:
            self.client.log_dict(run_id, preprocess, PREPROCESS_ARTIFACT)
        self.log_search_metrics(run_id, metrics)
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=run_id), _without_pickle_warning():
            # pickle, not MLflow's default pt2: torch.export fixes the batch size to the example's.
            # `nascomp reproduce` says what that means for loading it (cli.PICKLE_NOTE).
            info = mlflow.pytorch.log_model(
                model, name="model", input_example=example.numpy(), serialization_format="pickle"
            )
        if onnx is not None:
            with tempfile.TemporaryDirectory() as folder:
                path = save_onnx_model(onnx, Path(folder), example.numpy())
                if preprocess is not None:
                    (path / PREPROCESS_ARTIFACT).write_text(json.dumps(preprocess, indent=2))
                self.client.log_artifacts(run_id, str(path), artifact_path=ONNX_MODEL_DIR)
        self.client.set_terminated(run_id, "FINISHED")
        return run_id, info.model_uri

    def register_onnx(self, run_id: str, name: str, source: TrialRecord) -> Any:
        """Register run ``run_id``'s ONNX model as a new version of ``name``, with the source
        trial and its metrics on the version."""
        return self._register(run_id, name, source, f"reproduced in run {run_id}", ONNX_MODEL_DIR)

    def register_shipped(
        self,
        source: TrialRecord,
        name: str,
        onnx: bytes,
        example: Any,
        preprocess: dict[str, Any] | None,
    ) -> Any:
        """Register trial ``source``'s file to ship as a new version of ``name``, not trained
        again (``nascomp export --register``): ``onnx``, the exported model.onnx, is logged to
        the trial's run as the MLflow model ``shipped_onnx_model/`` with ``preprocess`` beside
        it, as a reproduction's ``onnx_model/`` is, and the version points at it."""
        with tempfile.TemporaryDirectory() as folder:
            path = save_onnx_model(onnx, Path(folder), example.numpy())
            if preprocess is not None:
                (path / PREPROCESS_ARTIFACT).write_text(json.dumps(preprocess, indent=2))
            self.client.log_artifacts(source.run_id, str(path), artifact_path=SHIPPED_MODEL_DIR)
        how = "as its search trained it (nascomp export, not trained again)"
        return self._register(source.run_id, name, source, how, SHIPPED_MODEL_DIR)

    def _register(self, run_id: str, name: str, source: TrialRecord, how: str, folder: str) -> Any:
        """Register run ``run_id``'s MLflow model ``folder``, with the source trial and the
        run's metrics on the version."""
        metrics = dict(self.client.get_run(run_id).data.metrics)
        tags = {"nascomp.source_run": source.run_id, **{k: repr(v) for k, v in metrics.items()}}
        text = ", ".join(f"{k} {v:g}" for k, v in sorted(metrics.items()))
        description = f"nascomp trial {source.run_id}, {how}: {text}"
        return register(self.client, run_id, name, description, tags, folder)

    def search_data_files(self, trial: TrialRecord) -> str | None:
        """The digest of the data files the search of ``trial`` read (``DATA_FILES_TAG``), or
        None where it kept none (bundled data, an older nascomp)."""
        return self._search_tags(trial).get(DATA_FILES_TAG)

    def search_code_files(self, trial: TrialRecord) -> dict[str, str]:
        """The SHA-256 of the source of each builder and factory the search of ``trial`` ran
        (``CODE_FILES_TAG``); empty where it kept none (no code of the user's, an older
        nascomp)."""
        value = self._search_tags(trial).get(CODE_FILES_TAG)
        return json.loads(value) if value else {}

    def _search_tags(self, trial: TrialRecord) -> dict[str, str]:
        run = self.client.get_run(trial.run_id)
        parent = run.data.tags.get("mlflow.parentRunId")
        return dict(self.client.get_run(parent).data.tags) if parent else {}

    def stored_run(self, run_id: str) -> Any | None:
        """Run ``run_id`` of this store, or None where it holds none; a sqlite file that does
        not exist yet holds nothing and is not created by asking."""
        from mlflow.exceptions import MlflowException

        path = self._sqlite_file()
        if path is not None and not path.is_file():
            return None
        try:
            return self.client.get_run(run_id)
        except MlflowException:
            return None

    def _sqlite_file(self) -> Path | None:
        """The file of a sqlite store (a relative one from the working folder, as MLflow
        reads it); None for any other store, and for an in-memory one."""
        if not self.uri.startswith("sqlite:///"):
            return None
        db = self.uri[len("sqlite:///") :].split("?", 1)[0]
        return Path(db).expanduser().resolve() if db and db != ":memory:" else None

    def log_experiment_yaml(self, run_id: str, experiment_yaml: str) -> None:
        """Replace the search run's experiment.yaml (a resume that changed its budget)."""
        self.client.log_text(run_id, experiment_yaml, "experiment.yaml")

    def reopen_search(self, run_id: str) -> None:
        """A resumed search continues its parent run rather than opening another."""
        self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))


def record_of(run: Any) -> TrialRecord:
    tags = run.data.tags
    if run.info.status == RunStatus.to_string(RunStatus.FINISHED):
        status = tags.get(STATUS_TAG, "ok")
    elif run.info.status == RunStatus.to_string(RunStatus.FAILED):
        status = "failed"
    else:  # RUNNING, or KILLED by an interrupted search that --resume continues
        status = tags.get(STATUS_TAG, run.info.status.lower())
    return TrialRecord(
        run_id=run.info.run_id,
        trial_id=tags.get(TRIAL_TAG, ""),
        status=status,
        params={key: decode_param(value) for key, value in run.data.params.items()},
        metrics=dict(run.data.metrics),
        tags=dict(tags),
        experiment_id=run.info.experiment_id,
        ended_ms=run.info.end_time or 0,
    )


def with_queued(records: list[TrialRecord], ops: list[dict[str, Any]]) -> list[TrialRecord]:
    """The trials as the store will hold them once ``ops`` (a previous driver's journal, in
    the order it wrote them: ``search.tracking.runlog``) are applied: a run the journal ends
    is ended with its queued metrics and tags, and a trial only the journal knows gets a
    record of its own (no run id yet), placed in the order the journal ended it. A resumed
    search rebuilt its hypervolume from the store alone, before the journal was applied, and
    counted a trial the journal ended as ended without metrics, or not at all."""
    known = {record.trial_id: record for record in records}
    changed: dict[str, dict[str, Any]] = {}  # trial -> the record's fields, as the ops leave them
    last_step: dict[tuple[str, str], int] = {}
    ended: dict[str, None] = {}  # trials the journal ends, in the order of their last end
    for op in ops:
        trial = op.get("trial")
        if not trial:
            continue  # the search run's own tags and curve
        if op["op"] == "delete":
            known.pop(trial, None)
            changed.pop(trial, None)
            ended.pop(trial, None)
            continue
        fields = changed.get(trial)
        if fields is None:
            base = known.get(trial) or TrialRecord("", trial, "running", {}, {})
            fields = dataclasses.asdict(base)
            changed[trial] = fields
        fields["tags"].update({key: str(value) for key, value in op.get("tags", {}).items()})
        if op["op"] == "start":
            fields["params"].update({k: decode_param(str(v)) for k, v in op["params"].items()})
        elif op["op"] == "metrics":
            for key, value in op["values"].items():
                if int(op["step"]) >= last_step.get((trial, key), -1):  # the last step's value
                    last_step[trial, key] = int(op["step"])
                    fields["metrics"][key] = float(value)
        elif op["op"] == "end":
            status = op["status"]
            fields["status"] = (
                "failed"
                if status == "FAILED"
                else fields["tags"].get(STATUS_TAG, "ok" if status == "FINISHED" else "killed")
            )
            ended.pop(trial, None)
            ended[trial] = None

    def current(trial: str) -> TrialRecord:
        return TrialRecord(**changed[trial]) if trial in changed else known[trial]

    stored = [r.trial_id for r in records if r.trial_id in known and r.trial_id not in ended]
    return [current(trial) for trial in [*stored, *ended]]


class _PickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Pickle or CloudPickle" not in record.getMessage()


@contextlib.contextmanager
def _without_pickle_warning() -> Iterator[None]:
    """MLflow warns, timestamped on stderr, at every pickled PyTorch model it logs; the
    caller says it once, in nascomp's words, next to the model's URI."""
    logger, dropped = logging.getLogger("mlflow.pytorch"), _PickleWarning()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)
