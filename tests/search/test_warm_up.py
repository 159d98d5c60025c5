"""What the driver's warm-up thread preloads (search/driver.py: _warm_up), each in a fresh
interpreter: whether a module is loaded depends on what the process imported before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

STORE_MODULE = "mlflow.store.tracking.sqlalchemy_store"


def _preload(uri: str) -> bool:
    """Whether ``Tracker(uri).preload()`` left MLflow's database store imported."""
    code = (
        "import sys\n"
        "from nascomp.search.tracking.store import Tracker\n"
        f"Tracker({uri!r}, 'e').preload()\n"
        f"print({STORE_MODULE!r} in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip() == "True"


@pytest.mark.parametrize("scheme", ["sqlite:///", "postgresql+psycopg2://u@h/"])
def test_a_database_uri_preloads_its_store_without_opening_it(tmp_path: Path, scheme: str) -> None:
    path = tmp_path / "mlflow.db"
    assert _preload(f"{scheme}{path}")
    # Opening the store would create the sqlite file: it waits until the checks have passed.
    assert not path.exists()


def test_a_server_uri_preloads_nothing() -> None:
    assert not _preload("http://127.0.0.1:5000")
