"""Addresses of pages of the MLflow UI (a single-page app: routes live after the ``#``).

MLflow 3's UI shows an experiment in one of two workspaces, GenAI (its default) or model
training, chosen by the ``workflowType`` query of the page's route, else by the last one the
browser used. nascomp's links ask for model training, where its runs are.
"""

from __future__ import annotations

ML_WORKSPACE = "?workflowType=machine_learning"


def runs_page(experiment_id: str, base_url: str = "") -> str:
    """The experiment's runs table (the experiment's own page opens on a GenAI overview)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs{ML_WORKSPACE}"


def run_page(experiment_id: str, run_id: str, base_url: str = "") -> str:
    """One run's page; without ``base_url`` a link relative to the UI that shows it."""
    return f"{base_url.rstrip('/')}#/experiments/{experiment_id}/runs/{run_id}{ML_WORKSPACE}"
