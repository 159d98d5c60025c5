"""How a trial's flat config goes to MLflow and comes back, value for value, type for type.

MLflow params are strings of at most 6,000 characters: fine for reading a run in the UI, but
``str(value)`` loses the type (``"3"`` the string and ``3`` the number look alike) and cuts long
values. So a trial run holds its config twice: as params, for display and filtering, and as
the JSON artifact :data:`CONFIG_ARTIFACT`, which is what ``reproduce`` reads. Runs logged
before that artifact existed are read back from their params by :func:`decode_param`'s guess.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

CONFIG_ARTIFACT = "trial_config.json"
PREPROCESS_ARTIFACT = "preprocess.json"  # a reproduction's: how to feed its model (search.export)
CONFIG_FORMAT = 1
PARAM_LIMIT = 6000  # MLflow's limit on a param value


def display_params(config: dict[str, Any]) -> dict[str, str]:
    """The params MLflow shows: ``str`` of each value, cut to MLflow's limit. A float shows
    its 15 significant digits: a range's step puts Optuna's draws on ``low + k * step``, which
    is 0.8999999999999999 for 0.9. The exact value is in the config document."""
    return {key: _shown(value)[:PARAM_LIMIT] for key, value in sorted(config.items())}


def _shown(value: Any) -> str:
    if isinstance(value, float | np.floating) and math.isfinite(value):
        return str(float(f"{value:.15g}"))
    return str(value)


def config_document(config: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of a flat config. JSON keeps str, int, float (NaN and infinities
    included, as Python's json module writes them), bool, None, lists and mappings apart; a
    NumPy scalar (a sampler may hand one out) is stored as the Python number it equals."""
    return {"format": CONFIG_FORMAT, "config": {k: _plain(v) for k, v in sorted(config.items())}}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def config_from_document(document: Any) -> dict[str, Any]:
    if (
        not isinstance(document, dict)
        or document.get("format") != CONFIG_FORMAT
        or not isinstance(document.get("config"), dict)
    ):
        raise ValueError(f"{CONFIG_ARTIFACT}: not a nascomp trial config (format {CONFIG_FORMAT})")
    return dict(document["config"])


def decode_param(text: str) -> Any:
    """Undo MLflow's str() of a param value: ints, floats, bools and None come back typed.

    A guess, used for display and for runs logged before :data:`CONFIG_ARTIFACT` existed only:
    a string that looks like a number comes back a number.
    """
    literals = {"None": None, "True": True, "False": False}
    if text in literals:
        return literals[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.startswith("[") or text.startswith("{"):
        try:
            return json.loads(text.replace("'", '"'))
        except json.JSONDecodeError:
            return text
    return text
