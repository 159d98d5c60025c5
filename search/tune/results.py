"""The keys of a trial's reports to Tune, shared by the trainable (which runs in the workers and
should import little), the searcher, the scheduler and the MLflow callback."""

from __future__ import annotations

import json
from typing import Any

STATUS_KEY = "nascomp_status"  # result key: ok | infeasible | pruned
# Result key of a trial the scheduler stopped: {"fidelity": fraction of training done, "values":
# {objective: value}} as the rung that stopped it saw them.
STOPPED_KEY = "nascomp_stopped_at"
INFO_PREFIX = "nascomp_info."  # result keys of word-valued trial facts, logged as tags
# A report's epochs held back since the previous report (search/tune/trainable.py), as JSON.
EARLIER_KEY = "nascomp_earlier_epochs"


def earlier_epochs(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The epochs a report carries besides its own, oldest first."""
    return json.loads(result[EARLIER_KEY]) if EARLIER_KEY in result else []
