"""The experiment file: one YAML document, validated completely before anything starts.

It composes every layer's settings (the space from ``nascomp.spaces``; data, training, teacher
and measurement from ``nascomp.trainers.settings``) with the search's own (sampler, resources,
tracking), so it lives in the top layer. Every section is a pydantic model with
``extra="forbid"``; :func:`load_experiment` turns the first problem into a one-line
:class:`~nascomp.search.errors.ConfigError` that names the field and what is allowed.
"""

from __future__ import annotations

import copy
import csv
import difflib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from nascomp.search.errors import ConfigError, dotted
from nascomp.spaces.constraints import check_can_hold, parse_constraints
from nascomp.spaces.models import plugin_error
from nascomp.spaces.params import RANGE_KEYS
from nascomp.spaces.space import ARCH_SPACES, SpaceConfig, arch_keys
from nascomp.trainers.config import flatten
from nascomp.trainers.init import file_digest
from nascomp.trainers.nb201_lookup import Nb201LookupConfig, table_problem
from nascomp.trainers.settings import (
    ABOVE_ZERO,
    MAX_SEED,
    METRIC_BOUNDS,
    METRICS,
    Section,
    TrainingSections,
)
from nascomp.trainers.teacher import TeacherJob

SAMPLERS = ("pls", "tpe_local", "nsga2", "tpe", "random")
# The built-in quickstart ships with the spaces package (package data).
QUICKSTART = Path(str(resources.files("nascomp.spaces").joinpath("quickstart.yaml")))


class RungsConfig(Section):
    """Rungs of the multi-objective successive-halving scheduler (``search.scheduler``)."""

    grace_period: int = Field(1, ge=1, description="epochs before the first rung")
    reduction_factor: float = Field(2.0, gt=1.0, description="keep 1/this of a rung's trials")


BUDGET_UNITS = ("wall_s", "cpu_hours", "gpu_hours")
# search.trials when a budget is given and the trials are not: the budget ends the search.
BUDGET_TRIALS_CAP = 10_000


class BudgetConfig(Section):
    """A search sized in time: trials start until this is spent (``search.budget``); none
    of the three given (the default): no budget, ``search.trials`` sizes the search.

    ``wall_s``: seconds of the search's trial phase (after the teacher is ready), summed over
    resumed runs. ``cpu_hours`` / ``gpu_hours``: each trial's running time times the CPUs /
    GPUs it holds (``resources``), summed over trials: what a cluster bills, not measured
    CPU time."""

    wall_s: float | None = Field(None, gt=0.0)
    cpu_hours: float | None = Field(None, gt=0.0)
    gpu_hours: float | None = Field(None, gt=0.0)

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, dict | BudgetConfig):
            raise ValueError(
                f"give one of {', '.join(BUDGET_UNITS)}, e.g. {{wall_s: 600}}; got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetConfig:
        given = [unit for unit in BUDGET_UNITS if getattr(self, unit) is not None]
        if len(given) > 1:
            raise ValueError(
                f"give one of {', '.join(BUDGET_UNITS)}, e.g. {{wall_s: 600}}; "
                f"got {', '.join(given)}"
            )
        return self

    @property
    def given(self) -> bool:
        return any(getattr(self, unit) is not None for unit in BUDGET_UNITS)

    @property
    def unit(self) -> str:
        return next(unit for unit in BUDGET_UNITS if getattr(self, unit) is not None)

    @property
    def limit(self) -> float:
        return float(getattr(self, self.unit))

    def shown(self) -> str | None:
        """``wall_s 30``, or None without a budget."""
        return f"{self.unit} {self.limit:g}" if self.given else None


# Samplers whose trials are moves from a parent (``ParentSampler``), so can inherit its weights.
INHERITING_SAMPLERS = ("pls", "tpe_local")


class SearchConfig(Section):
    # pls: best on the exact NAS-Bench-201 front (docs/benchmarks.md, issue 4).
    sampler: Literal["pls", "tpe_local", "nsga2", "tpe", "random"] = "pls"
    trials: int = Field(
        20, ge=1, description=f"the most trials; {BUDGET_TRIALS_CAP} by default with a budget"
    )
    budget: BudgetConfig = Field(
        default_factory=BudgetConfig,
        description="stop starting trials once this is spent: wall_s, cpu_hours or gpu_hours",
    )
    concurrent: int = Field(2, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    population_size: int | None = Field(
        None, ge=2, description="NSGA-II population; default max(4, min(50, trials // 3))"
    )
    scheduler: Literal["none", "mo_asha"] = Field(
        "none", description="mo_asha: stop trials early by non-dominated sorting at each rung"
    )
    rungs: RungsConfig = Field(default_factory=RungsConfig)
    max_failures: int = Field(
        2,
        ge=0,
        description="times a trial whose worker died is restarted from its last checkpoint",
    )
    reuse_training: bool = Field(
        True,
        description="a trial whose architecture, training, distillation and seed equal an "
        "earlier trial's starts pruning from that trial's trained state: the same results "
        "(exact on CPU), without training again",
    )
    inherit_epochs: int = Field(
        0,
        ge=0,
        description="0: off. N: a trial that is a pls or tpe_local move changing its parent's "
        "architecture or distillation starts from the parent's trained weights (matched by "
        "name, sliced where shapes differ) and trains N epochs instead of train.epochs",
    )
    cost_aware: bool = Field(
        False,
        description="pls divides each move's predicted hypervolume gain by the point's "
        "predicted cost of training from scratch, learned from the seconds the trials that "
        "trained from scratch took (its choices then depend on measured times)",
    )
    checkpoint_every_s: float = Field(
        10.0,
        ge=0.0,
        description="a trial reports its epochs (to MLflow, as steps) and checkpoints at most "
        "this often, and always at its end; 0: after every epoch. mo_asha: every epoch",
    )

    @model_validator(mode="after")
    def _budget_sizes_the_search(self) -> SearchConfig:
        # Given alone, a budget ends the search; search.trials, when given too, caps it.
        if self.budget.given and "trials" not in self.model_fields_set:
            self.trials = BUDGET_TRIALS_CAP
        return self

    @model_validator(mode="after")
    def _population_is_nsga2s(self) -> SearchConfig:
        # Read by NSGA-II alone: given with another sampler it changed nothing, unsaid.
        if self.population_size is not None and self.sampler != "nsga2":
            raise ValueError(
                f"search.population_size: read by sampler nsga2 alone; sampler is {self.sampler!r}"
            )
        sized = self.budget.given and "trials" not in self.model_fields_set
        trials = BUDGET_TRIALS_CAP if sized else self.trials  # validators' order aside
        if self.population_size is not None and self.population_size > trials:
            raise ValueError(
                f"search.population_size: {self.population_size} is more than search.trials "
                f"({trials}): NSGA-II would end inside its first, random generation"
            )
        return self

    @property
    def sized_by_budget(self) -> bool:
        """Whether the budget alone ends the search: ``trials`` is then a cap, no count."""
        return self.budget.given and self.trials == BUDGET_TRIALS_CAP


class ResourcesConfig(Section):
    cpus_per_trial: float = Field(1.0, gt=0.0)
    gpus_per_trial: float = Field(0.0, ge=0.0)
    ship_code: bool = Field(
        True,
        description="send the modules of builder/factory functions that are not installed in "
        "the environment to every Ray worker (runtime_env py_modules); false: the nodes have "
        "them installed",
    )

    @field_validator("gpus_per_trial")
    @classmethod
    def _gpu_share(cls, gpus: float) -> float:
        # A trial trains on one device (no data parallelism): Ray would reserve the other GPUs
        # for it to leave idle, and the gpu_hours budget would charge them.
        if gpus > 1:
            raise ValueError(
                "a trial trains on one GPU: give 1, or a fraction to share one (0.25: four "
                f"trials on a GPU); got {gpus:g}"
            )
        return gpus


class TrackingConfig(Section):
    uri: str | None = Field(
        None, description="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    experiment: str = Field("nascomp")  # MLflow refuses "" (_experiment_named)
    retry_s: float = Field(
        5.0, gt=0.0, description="while the tracking server is away, retry buffered writes"
    )
    batch_s: float = Field(
        2.0,
        ge=0.0,
        description="gather the writes of this many seconds into one log_batch per run; 0: none",
    )
    flush_timeout_s: float = Field(
        120.0,
        ge=0.0,
        description="at the end, how long to wait for an absent tracking server to come back",
    )

    @field_validator("uri")
    @classmethod
    def _uri_given(cls, uri: str | None) -> str | None:
        if uri is not None and not uri.strip():  # it was taken for the default, unsaid
            raise ValueError(
                "empty; give a tracking URI, or leave it out for $MLFLOW_TRACKING_URI or "
                "sqlite:///mlflow.db"
            )
        return uri

    @field_validator("experiment")
    @classmethod
    def _experiment_named(cls, name: str) -> str:
        if not name.strip():  # was pydantic's "String should match pattern '\S'"
            raise ValueError("empty; give the experiment's name, or leave it out for 'nascomp'")
        return name

    def resolved_uri(self) -> str:
        uri = self.uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
        relative = uri[len("sqlite:///") :]
        if (
            uri.startswith("sqlite:///")
            and not uri.startswith("sqlite:////")
            and relative.split("?", 1)[0] != ""
            and ":memory:" not in relative  # in-memory: refused by the store's checks
        ):
            # Make a relative sqlite path absolute, so Ray workers and the UI see the same file.
            uri = "sqlite:///" + str(Path(relative).resolve())
        return uri


class Experiment(TrainingSections):
    """A whole search: what to search over, how to train, where to log."""

    space: SpaceConfig = Field(default_factory=SpaceConfig)
    objectives: dict[str, Literal["min", "max"]] = Field(
        default_factory=lambda: {"val_accuracy": "max", "size_bytes": "min"}
    )
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage: str = Field("nascomp-results", description="folder for Ray Tune's results")
    constraints: list[str] = Field(
        default_factory=list, description="e.g. 'latency_ms <= 2.0'; all must hold"
    )
    trial: Literal["train", "nb201_lookup"] = Field(
        "train", description="train: run_trial; nb201_lookup: NAS-Bench-201 table lookup"
    )
    nb201: Nb201LookupConfig = Field(default_factory=Nb201LookupConfig)

    @field_validator("storage")
    @classmethod
    def _storage_given(cls, storage: str) -> str:
        if not storage.strip():  # it was the working folder, unsaid
            raise ValueError("empty; give a folder, or leave it out for nascomp-results")
        return storage

    @field_validator("constraints")
    @classmethod
    def _constraints_parse(cls, constraints: list[str]) -> list[str]:
        check_can_hold(parse_constraints(constraints, METRICS), METRIC_BOUNDS, ABOVE_ZERO)
        return constraints

    @model_validator(mode="after")
    def _lookup_needs_plain_nb201(self) -> Experiment:
        if self.trial == "nb201_lookup":
            _check_lookup(self)
        return self

    @field_validator("objectives", mode="before")
    @classmethod
    def _null_drops_an_objective(cls, objectives: Any) -> Any:
        # `--set objectives.latency_ms=null`: the quickstart's two others (refused before as
        # "Input should be 'min' or 'max'", re-giving the whole mapping the only way)
        if isinstance(objectives, dict):
            for name, way in objectives.items():  # a misspelt one, dropped, went unsaid
                if way is None and name not in METRICS:
                    hint = _did_you_mean(name, METRICS)
                    raise ValueError(
                        f"unknown metric {name!r}{hint}; allowed: {', '.join(METRICS)}"
                    )
            return {name: way for name, way in objectives.items() if way is not None}
        return objectives

    @field_validator("objectives")
    @classmethod
    def _known_metrics(cls, objectives: dict[str, str]) -> dict[str, str]:
        if not objectives:
            raise ValueError(f"name at least one objective from {', '.join(METRICS)}")
        for name in objectives:
            if name not in METRICS:
                hint = _did_you_mean(name, METRICS)
                raise ValueError(f"unknown metric {name!r}{hint}; allowed: {', '.join(METRICS)}")
        return objectives

    @model_validator(mode="after")
    def _scheduler_needs_epochs(self) -> Experiment:
        # Found when the search built its scheduler, it left a parent run RUNNING for ever.
        if self.search.scheduler == "mo_asha" and self.trial != "train":
            raise ValueError(
                "search.scheduler: mo_asha needs trial: train (a lookup has no epochs to stop "
                "at); none turns it off"
            )
        return self

    @model_validator(mode="after")
    def _gpu_budget_needs_gpus(self) -> Experiment:
        budget = self.search.budget
        if budget.gpu_hours is not None and not self.resources.gpus_per_trial:
            raise ValueError(
                "search.budget.gpu_hours: needs resources.gpus_per_trial > 0 (trials without "
                "a GPU spend no GPU-hours); use wall_s or cpu_hours"
            )
        return self

    @model_validator(mode="after")
    def _cost_aware_needs_pls(self) -> Experiment:
        if self.search.cost_aware and self.search.sampler != "pls":
            raise ValueError(
                "search.cost_aware: true needs search.sampler: pls (the only sampler that "
                f"predicts each move's gain), not {self.search.sampler}; false turns it off"
            )
        return self

    @model_validator(mode="after")
    def _inheritance_possible(self) -> Experiment:
        search, epochs = self.search, self.search.inherit_epochs
        if not epochs:
            return self
        why = None
        if search.sampler not in INHERITING_SAMPLERS:
            why = f"search.sampler {' or '.join(INHERITING_SAMPLERS)} (a move has a parent)"
        elif self.trial != "train":
            why = "trial: train (a lookup trains nothing)"
        elif not search.reuse_training:
            why = "search.reuse_training: true (its store keeps the parents' trained weights)"
        elif epochs >= self.train.epochs:
            why = f"fewer epochs than train.epochs ({self.train.epochs})"
        if why is not None:
            raise ValueError(f"search.inherit_epochs: {epochs} needs {why}; 0 turns it off")
        return self

    @model_validator(mode="after")
    def _teacher_needed(self) -> Experiment:
        if self.space.distillation_possible() and self.teacher.arch.get("family") is None:
            raise ValueError("teacher.arch.family is required when distillation is searched")
        return self

    def metric_names(self) -> list[str]:
        return list(self.objectives)

    def modes(self) -> list[str]:
        return list(self.objectives.values())


def _placement(experiment: Experiment) -> tuple[int, str]:
    """Torch threads and device of every trial (and of the teacher)."""
    resources = experiment.resources
    # Equal thread counts make a reproduced run bit-identical to the searched one on CPU.
    return max(1, int(resources.cpus_per_trial)), "cuda" if resources.gpus_per_trial > 0 else "cpu"


def trial_constants(experiment: Experiment) -> dict[str, Any]:
    """The fixed part of every trial's flat config, taken from the experiment."""
    threads, device = _placement(experiment)
    fixed = {
        "data": experiment.data.model_dump(),
        "train": experiment.train.model_dump(),
        "measure": experiment.measure.model_dump(),
        "seed": experiment.search.seed,
        "threads": threads,
        "device": device,
    }
    if experiment.space.distillation_possible():
        fixed["teacher"] = experiment.teacher.model_dump()
    return flatten(fixed)


def teacher_job(experiment: Experiment) -> TeacherJob:
    """The teacher every trial of this experiment distils from (``TeacherJob.of_trial`` of
    any of its trials gives the same job, hence the same cached weights)."""
    threads, device = _placement(experiment)
    return TeacherJob(
        teacher=experiment.teacher,
        data=experiment.data,
        augment=experiment.train.augment,
        momentum=experiment.train.momentum,
        seed=experiment.search.seed,
        threads=threads,
        device=device,
        class_weight=experiment.train.class_weight,
    )


def _check_lookup(experiment: Experiment) -> None:
    """A table lookup knows only plain NB201 cells (C=16, N=5), uncompressed, untaught."""
    from nascomp.trainers.nb201_lookup import CHANNELS, N_CELLS, missing_cells, missing_columns
    from nascomp.trainers.nb201_lookup import METRICS as LOOKUP_METRICS

    space = experiment.space
    fixed = {
        "space.arch.family": (space.arch.family, "nb201"),
        "space.arch.channels": (getattr(space.arch, "channels", None), CHANNELS),
        "space.arch.n_cells": (getattr(space.arch, "n_cells", None), N_CELLS),
        "space.prune.method": (space.prune.method, "none"),
        "space.quant.bits": (space.quant.bits, 32),
        "space.distill.enabled": (space.distill.enabled, False),
    }
    # Checked here, not on the field: experiments that never look anything up need no table.
    table = experiment.nb201.resolved_table()
    if what := table_problem(table):
        raise ValueError(f"nb201.table: NAS-Bench-201 table {str(table)!r} {what}")
    try:
        missing = missing_columns(table, experiment.nb201.dataset)
    except ValueError as exc:  # not UTF-8: it said the header lacked the columns
        raise ValueError(f"nb201.table: {str(table)!r}: {exc}") from None
    if missing:
        raise ValueError(
            f"nb201.table: {str(table)!r} is no NAS-Bench-201 table: its first line lacks the "
            f"column(s) {', '.join(missing)} (the table's arch,cellstr,cifar10-test,...)"
        )
    experiment.nb201.table = str(table)
    digest, read = file_digest(table), experiment.nb201.table_sha256
    if read is not None and read != digest:  # a resumed search's: the table changed since
        raise ValueError(
            f"nb201.table_sha256: the table {str(table)!r} is not the one this search read "
            f"(SHA-256 {read[:12]}... then, {digest[:12]}... now): put that table back, or "
            "start a new search"
        )
    experiment.nb201.table_sha256 = digest
    for field, (value, needed) in fixed.items():
        if value != needed and value != [needed]:
            raise ValueError(
                f"{field}: trial nb201_lookup needs {needed!r} (the table's setting); got {value!r}"
            )
    # The whole table, read as the trials read it: a value that is no percentage was looked up
    # unsaid (150 logged as val_accuracy 1.5), and a bad or missing cell failed every trial
    # that drew it; each is now one line before the search starts.
    try:
        lacking = missing_cells(table, experiment.nb201.dataset, space.arch.ops)
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"nb201.table: {str(table)!r}: {exc}") from None
    if lacking:
        raise ValueError(
            f"nb201.table: {str(table)!r} lacks {len(lacking)} of the space's cells (e.g. "
            f"{lacking[0]}): NAS-Bench-201's table holds all 15,625"
        )
    parsed = parse_constraints(experiment.constraints, METRICS)
    named = [(f"objectives.{name}", name) for name in experiment.objectives]
    named += [(f"constraints[{i}]", c.metric) for i, c in enumerate(parsed)]
    for where, name in named:
        if name not in LOOKUP_METRICS:
            raise ValueError(
                f"{where}: trial nb201_lookup does not report {name!r}; "
                f"objectives and constraints may use {', '.join(LOOKUP_METRICS)}"
            )


# --------------------------------------------------------------------------- loading


def load_experiment(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> Experiment:
    """Read, override and validate an experiment; raise ConfigError (one line) on any problem."""
    raw = read_yaml(Path(path) if path else QUICKSTART)
    for item in overrides or []:
        apply_override(raw, item)
    return validate_experiment(raw)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        missing = (
            "is a folder, not a YAML file"
            if path.is_dir()
            else "is not a regular file"
            if path.exists()
            else "does not exist"
        )
        raise ConfigError(f"experiment file {str(path)!r} {missing}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        # safe_load with duplicate keys refused: _UniqueKeyLoader is a SafeLoader
        raw = load_yaml(text)
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        why = f": {problem}" if problem else ""
        if problem and "'\\t'" in problem:
            why += " (YAML indents with spaces, not tabs)"
        raise ConfigError(f"{path}: not valid YAML{where}{why}") from None
    if raw is None:
        # An empty file is a mistake (a save that did not happen, a wrong path), not a request
        # for every default: that would run the quickstart's search in its place.
        raise ConfigError(
            f"{path}: the experiment file is empty; write at least one section (see "
            "examples/ or docs/experiment.md), or run `nascomp search` without a file for the "
            "quickstart"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key given twice in one mapping. YAML keeps the
    last silently, so a second ``train:`` section (an edit pasted below the first) would drop
    every setting of the first without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *anchor`` merges keys, which the mapping may then override
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = lines.get(key)
                lines[key] = line
            except TypeError:
                continue  # an unhashable key: the constructor below reports it
            if first is not None:
                where = f"line {line}" if first == line else f"lines {first} and {line}"
                raise _DuplicateKey(
                    f"key {key!r} is given twice in one mapping ({where}); YAML would keep "
                    "the second alone and drop the first without a word: merge them"
                )
        return super().construct_mapping(node, deep=deep)


# No timestamps, as in YAML 1.2: PyYAML (YAML 1.1) reads ``2024-01-01`` as a date, which no
# field takes (an experiment named by its day was refused as a "datetime.date"); here it is a
# string. Booleans stay YAML 1.1's (yes, no, on and off are true or false), as every PyYAML
# file a user has written reads them.
# Numbers as YAML 1.2 writes them. PyYAML (YAML 1.1) read ``lr: 1e-3`` as the string "1e-3"
# (a number field refuses strings: a quoted '5' is not what was meant), and changed values
# silently: ``010`` was 8 (octal), ``1:30`` was 90 (base 60). Those are strings here, which a
# number field refuses by name; ``0o10`` and ``0x10`` stay numbers.
_TIMESTAMP_TAG, _INT_TAG = "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in entries if tag not in (_TIMESTAMP_TAG, _INT_TAG, _FLOAT_TAG)]
    for first, entries in _UniqueKeyLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    _INT_TAG,
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0o[0-7_]+|0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_UniqueKeyLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9][0-9_]*"
        r"(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with duplicate keys refused and ``1e-3`` read as a number."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``key.path=value`` to the raw mapping; the value is parsed as YAML (safe_load)."""
    key, sep, text = item.partition("=")
    if not sep or not all(part.strip() for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. search.trials=8")
    if not text.strip():
        # An unset shell variable (`--set search.trials=$N`): YAML reads it as null, and the
        # field's default then ran unsaid (a 20-trial search for a file's 200).
        raise ConfigError(
            f"--set {key.strip()}: empty value; give one, or {key.strip()}=null for the "
            "field's default"
        )
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: value {text!r} is not valid YAML") from None
    node = raw
    parts = key.strip().split(".")
    for depth, part in enumerate(parts[:-1], start=1):
        if node.get(part) is None:  # absent, or null: an earlier KEY=null asked for the default
            # A mapping the file leaves to its default starts as that default, so the key
            # set is added to it, as it would be to the file's own: objectives.latency_ms=min
            # adds a third objective to the default two rather than replacing them. A range
            # given in part is completed by the space's own rules (spaces.params): a step given
            # to a log range drops its log there, which a copy of the default range would keep.
            default = _field_default(parts[:depth])
            if isinstance(default, dict) and not set(default) <= RANGE_KEYS:
                node[part] = copy.deepcopy(default)
            else:  # a section; one of a tagged union (space.arch) keeps its default's tag
                family = getattr(default, "family", None)
                node[part] = {"family": family} if isinstance(family, str) else {}
        child = node[part]
        if not isinstance(child, dict):
            if parts[depth] in RANGE_KEYS:  # a range's end, set on a value or a list
                leaf = ".".join(parts[:depth])
                raise ConfigError(
                    f"--set {key}: {leaf} is {child!r}, not a range; set the whole leaf, "
                    f"e.g. --set '{leaf}={{low: 1, high: 4}}'"
                )
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _field_default(path: list[str]) -> Any:
    """The default of the experiment's field at ``path`` (its sections' fields by name), or
    None where the path leaves the schema."""
    model: Any = Experiment
    default = None
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not isinstance(fields, dict) or part not in fields:
            return None
        info = fields[part]
        default = info.get_default(call_default_factory=True)
        model = info.annotation
    return default


def validate_experiment(raw: dict[str, Any]) -> Experiment:
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc, raw)) from None


def _first_error(exc: ValidationError, raw: dict[str, Any]) -> str:
    errors = exc.errors(include_url=False)
    error = errors[0]
    loc, family = _clean_loc(error["loc"])
    field = dotted(_split_family(error["loc"])[0]) or "experiment"
    # A field of several types (bool | 'auto') gets one error per type, located by a tag
    # (``data.stream.bool``): the tags are dropped and the alternatives said together.
    members = [e for e in errors if _clean_loc(_untagged(e["loc"]))[0] == _untagged(loc)]
    if len(members) > 1 and _untagged(loc) != loc:
        field = ".".join(_untagged(loc))
        others = len({tuple(_untagged(e["loc"])) for e in errors}) - 1
        more = f" (and {others} more problem(s))" if others else ""
        wanted = " or ".join(
            e["msg"].removeprefix("Input should be ").split(",")[0] for e in members
        )
        return f"{field}: should be {wanted}; got {error.get('input')!r}{more}"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if error["type"] == "string_type" and isinstance(error.get("input"), bool | int | float):
        # ``experiment: on`` or ``12345``: YAML read a word or digits meant as text
        kind = "true or false" if isinstance(error["input"], bool) else "a number"
        return (
            f"{field}: expected a string; got {error['input']!r} (YAML reads it as {kind}: "
            f"quote it for text){more}"
        )
    if error["type"] == "model_type":  # pydantic names the section's class
        return f"{field}: must be a mapping of its settings; got {error.get('input')!r}{more}"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], family)
        hint = _did_you_mean(loc[-1], allowed)
        return f"{field}: unknown key{hint}; allowed: {', '.join(allowed)}{more}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "union_tag_invalid":
        given = error["input"].get("family")
        if (failed := plugin_error(given)) is not None:
            return f"{field}.family: {failed}{more}"
        return f"{field}.family: must be one of {', '.join(ARCH_SPACES)}; got {given!r}{more}"
    if error["type"] == "union_tag_not_found":  # an arch mapping without its family
        return f"{field}.family: missing; give one of {', '.join(ARCH_SPACES)}{more}"
    if error["type"] in ("value_error", "assertion_error", "missing"):
        keyed = _ARCH_KEY.match(message) if loc and loc[-1] == "arch" else None
        if keyed is not None:  # a builder argument's spec: space.arch.width, not space.arch
            return f"{field}.{keyed[1]}: {keyed[2]}{more}"
        if message.startswith((f"{field}.", f"{field}:", f"{field}[")):  # it names its field
            return f"{message}{more}"
        if not loc and _NAMES_A_FIELD.match(message):  # a check across sections names its own
            return f"{message}{more}"
        return f"{field}: {message}{more}"
    return f"{field}: {message}; got {error.get('input')!r}{more}"


# An arch section's message about one of its keys (``width: range needs low < high``).
_ARCH_KEY = re.compile(r"^([A-Za-z_]\w*): (.*)$", re.DOTALL)
# A message that starts with a dotted field (``search.cost_aware: true needs ...``).
_NAMES_A_FIELD = re.compile(r"^[a-z_][a-z0-9_]*[.\[][\w.\[\]]+: ")  # nb201.table, constraints[0]
# pydantic's tags for the members of a union of types, as they end an error's location
_TYPE_TAGS = re.compile(r"^(bool|int|float|str|list\[.*\]|dict\[.*\]|literal\[.*\])$")


def _untagged(loc: Any) -> list[str]:
    """An error's location without the union member's tag that pydantic appends."""
    parts = [str(part) for part in loc]
    return parts[:-1] if parts and _TYPE_TAGS.match(parts[-1]) else parts


def _clean_loc(raw_loc: tuple[Any, ...]) -> tuple[list[str], str | None]:
    """Drop the discriminated union's tag from an error location, remembering which it was."""
    kept, family = _split_family(raw_loc)
    return [str(part) for part in kept], family


def _split_family(raw_loc: Any) -> tuple[list[Any], str | None]:
    """The location's parts (a list's index an int) without the architecture family's tag
    (``space.arch.cnn.width``), and that family."""
    kept: list[Any] = []
    family = None
    for part in raw_loc:
        if kept and kept[-1] == "arch" and part in ARCH_SPACES:
            family = str(part)
            continue
        kept.append(part)
    return kept, family


def _allowed_keys(loc: list[str], family: str | None) -> list[str]:
    if loc[-2:] == ["space", "arch"]:
        return arch_keys(family)
    model: Any = Experiment
    for part in loc:
        annotation = model.model_fields[part].annotation
        model = annotation
    return list(model.model_fields)


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


__all__ = [
    "METRICS",
    "QUICKSTART",
    "SAMPLERS",
    "BudgetConfig",
    "ConfigError",
    "Experiment",
    "ResourcesConfig",
    "SearchConfig",
    "TrackingConfig",
    "load_experiment",
    "teacher_job",
    "trial_constants",
]
