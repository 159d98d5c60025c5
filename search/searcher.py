"""Ray Tune's OptunaSearch, told about trials that are infeasible rather than finished."""

from __future__ import annotations

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

STATUS_KEY = "nascomp_status"  # result key: ok | infeasible
INFO_PREFIX = "nascomp_info."  # result keys of word-valued trial facts, logged as tags


class NascompOptunaSearch(OptunaSearch):
    """OptunaSearch that records infeasible architectures as failed Optuna trials.

    Stock OptunaSearch would tell Optuna "complete" with missing objective values (or crash on
    them); an infeasible point must instead never guide the sampler and never reach the front.
    """

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        status = (result or {}).get(STATUS_KEY, "ok")
        if status == "ok" or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr(STATUS_KEY, status)
        self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        self._completed_trials.add(trial_id)

    @property
    def study(self):
        return self._ot_study
