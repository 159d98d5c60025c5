"""Every validation error: one line, naming the field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nascomp.search.experiment import (
    ConfigError,
    apply_override,
    load_experiment,
    load_yaml,
    read_yaml,
    validate_experiment,
)


def error_for(*overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_experiment(None, list(overrides))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_quickstart_is_valid() -> None:
    experiment = load_experiment()
    assert experiment.data.name == "digits"
    assert experiment.search.trials == 20
    assert experiment.objectives == {
        "val_accuracy": "max",
        "size_bytes": "min",
        "latency_ms": "min",
    }


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "search.trails=3",
            "search.trails: unknown key (did you mean 'trials'?); allowed: sampler, trials",
        ),
        ("space.prune.ration=0.5", "space.prune.ration: unknown key (did you mean 'ratio'?)"),
        ("space.arch.n_stagez=[1]", "space.arch.n_stagez: unknown key (did you mean 'n_stages'?)"),
        ("traning.epochs=3", "traning: unknown key (did you mean 'train'?)"),
        ("search.trials=abc", "search.trials: must be a number; got 'abc'"),
        ("search.trials='5'", "search.trials: must be a number; got '5' (quoted: write it"),
        # nascomp's YAML reads 010 as text, unquoted: it was told it had quotes
        ("train.epochs=010", "train.epochs: must be a number; got '010' (a number with a lead"),
        ("search.trials=0", "search.trials: Input should be greater than or equal to 1"),
        ("search.trials=true", "search.trials: must be a number; got True"),
        # Ray reserved both GPUs, the trial used one, gpu_hours charged two (a helper's review)
        (
            "resources.gpus_per_trial=2",
            "resources.gpus_per_trial: a trial trains on one GPU: give 1, or a fraction to share "
            "one (0.25: four trials on a GPU); got 2",
        ),
        ("resources.gpus_per_trial=1.5", "resources.gpus_per_trial: a trial trains on one GPU"),
        ("data.stream=maybe", "data.stream: must be true, false or 'auto'; got 'maybe'"),
        # pydantic's lax mode took 1, 0 and quoted words for booleans
        ("data.stream=1", "data.stream: must be true, false or 'auto'; got 1"),
        ("search.reuse_training=0", "search.reuse_training: must be true or false; got 0"),
        ("search.cost_aware='true'", "search.cost_aware: must be true or false; got 'true'"),
        ("train.augment.flip=1", "train.augment.flip: must be true or false; got 1"),
        ("train.augment=3", "train.augment: must be a mapping of its settings; got 3"),
        ("train.epochs=false", "train.epochs: must be a number; got False"),
        ("train.lr=.inf", "train.lr: Input should be a finite number; got inf"),
        ("train.lr=.nan", "train.lr: Input should be a finite number"),
        # inf unquoted reaches the check as the word 'inf': it was told it had quotes
        ("search.budget.wall_s=inf", "search.budget.wall_s: must be a finite number; got 'inf'"),
        (
            "search.population_size=4",
            "search.population_size: read by sampler nsga2 alone; sampler is 'pls'",
        ),
        ("search.seed=-1", "search.seed: Input should be greater than or equal to 0; got -1"),
        ("search.seed=4294967296", "search.seed: Input should be less than or equal to 4294967295"),
        ("data.split_seed=-1", "data.split_seed: Input should be greater than or equal to 0"),
        (
            "search.sampler=cmaes",
            "search.sampler: Input should be 'pls', 'tpe_local', 'nsga2', 'tpe' or 'random'",
        ),
        ("space.quant.bits=[4, 9]", "space.quant.bits: bit-width must be in 2..8, 16 or 32; got 9"),
        ("space.quant.bits=1", "space.quant.bits: bit-width must be in 2..8, 16 or 32; got 1"),
        (
            "space.quant.groups={a: [stem.*]}",
            "space.quant: groups are read with mixed: groups; mixed is 'none'",
        ),
        ("space.quant.budget=4", "space.quant: budget is read with mixed: budget; mixed is 'none'"),
        ("space.quant.bits=[4, 8, 12]", "got 12"),
        ("space.prune.ratio=1.0", "space.prune.ratio: must be in [0.0, 1.0); got 1.0"),
        (
            "space.prune.ratio={low: -0.1, high: 0.5}",
            "space.prune.ratio: must be in [0.0, 1.0); got -0.1",
        ),
        (
            "space.distill.temperature=0",
            "space.distill.temperature: must be a finite number > 0.0; got 0.0",
        ),
        ("space.distill.temperature=-2", "space.distill.temperature: must be a finite number > 0"),
        # nan passes every comparison and inf every lower bound: every trial failed on them
        ("space.distill.temperature=.inf", "space.distill.temperature: must be a finite number"),
        ("space.distill.temperature=.nan", "space.distill.temperature: must be a finite number"),
        ("space.arch.width_mult=.nan", "space.arch.width_mult: must be in (0.0, 8.0]; got nan"),
        (
            "space.distill.feature_weight={low: 0.5, high: .inf}",
            "space.distill.feature_weight: must be a finite number",
        ),
        ("space.arch.block=[]", "space.arch.block: choice list is empty"),
        (
            "space.arch.block=[plain, wide]",
            "space.arch.block: must be one of plain, residual, depthwise; got 'wide'",
        ),
        (
            "space.arch.family=vit",
            "space.arch.family: must be one of cnn, custom, mlp, nb201, timm, torchvision; "
            "got 'vit'",
        ),
        ("space.arch.n_stages=[1, true]", "space.arch.n_stages: expected an integer; got True"),
        ("space.prune.ratio={low: 0.5, high: 0.2}", "range needs low < high"),
        (
            "space.arch.kernel_size={low: 1, high: 5}",
            "space.arch.kernel_size: a range ({low, high}) is not allowed",
        ),
        (
            "space.quant.bits={low: 4, high: 16}",
            "space.quant.bits: a range ({low, high}) is not allowed",
        ),
        ("space.arch.block={low: a, high: b}", "space.arch.block: a range"),
        (
            "space.prune.ratio={low: 0.1, high: 0.5, log: true, step: 0.1}",
            "takes log or step, not both",
        ),
        ("space.prune.ratio={low: 0.1, hi: 0.5}", "unknown range key(s) ['hi']"),
        (
            "space.prune.ratio={low: 0.2, high: 0.8, step: 0.7}",
            "space.prune.ratio: range step 0.7 is wider than the range 0.2..0.8: only 0.2 "
            "could be drawn; give a step of at most 0.6",
        ),
        ("space.prune.ratio={low: 0.2, high: 0.8, step: 0}", "step must be a positive number"),
        ("space.prune.ratio={low: 0.2, high: 0.8, step: .nan}", "step must be a positive"),
        ("space.prune.ratio={low: 0.2, high: 0.8, step: true}", "step must be a positive"),
        (
            "space.arch={family: cnn, base_channels: {low: 8, high: 32, step: 2.5}}",
            "space.arch.base_channels: an integer range takes an integer step; got step=2.5",
        ),
        (  # keys of no default family's: which model is meant? (cnn's alone are a cnn)
            "space.arch={builder: 'shop:net', width: [16, 32]}",
            "space.arch.family: missing; give one of cnn, custom, mlp, nb201, timm, torchvision",
        ),
        (
            "objectives={val_acc: max}",
            "objectives: unknown metric 'val_acc' (did you mean 'val_accuracy'?)",
        ),
        (
            "objectives={val_accuracy: up}",
            "objectives.val_accuracy: Input should be 'min' or 'max'",
        ),
        (
            "data.name=svhn",
            "data.name: Input should be 'digits', 'mnist', 'fashion_mnist', 'imagefolder', "
            "'custom', 'torchvision' or 'csv'",
        ),
        ("data.name=mnist", "data.root is required for dataset 'mnist'"),
        (
            "data={name: custom, factory: 'nowhere:f', root: /nonexistent/x}",
            "data.root: /nonexistent/x does not exist (the factory gets it as root=",
        ),
        (  # data.root replaced it as the factory's root=, unsaid (a helper's sweep)
            "data={name: custom, factory: 'nowhere:f', root: /tmp, options: {root: /tmp/x}}",
            "data.options.root: data.root is passed as root= too; give one of them",
        ),
        ("search.inherit_epochs=-1", "search.inherit_epochs: Input should be greater than"),
    ],
)
def test_bad_value_names_the_field(override: str, expected: str) -> None:
    assert expected in error_for(override)


def test_a_range_given_in_part_takes_the_rest_from_the_default(tmp_path: Path) -> None:
    """A file without ``space.prune``: the default ratio {low: 0.1, high: 0.8} fills in."""
    path = tmp_path / "e.yaml"
    path.write_text("search: {trials: 2}\n")
    space = load_experiment(path, ["space.prune.ratio.high=0.5"]).space
    assert space.prune.ratio == {"low": 0.1, "high": 0.5, "log": False, "step": None}
    # The default temperature is a log range: a step replaces its log.
    space = load_experiment(path, ["space.distill.temperature.step=1"]).space
    assert space.distill.temperature == {"low": 1.0, "high": 8.0, "log": False, "step": 1}
    with pytest.raises(ConfigError) as caught:
        load_experiment(path, ["space.prune.ratio.high=0.05"])
    assert str(caught.value) == (
        "space.prune.ratio: range needs low < high; got low=0.1, high=0.05 (low from the default)"
    )
    with pytest.raises(ConfigError, match="needs both 'low' and 'high'"):
        load_experiment(path, ["space.prune.ratio={}"])  # nothing given: no range at all


def test_a_key_set_in_a_mapping_left_to_its_default_adds_to_it(tmp_path: Path) -> None:
    """Without ``objectives`` in the file, --set objectives.latency_ms=min adds a third
    objective to the default two, as it does to a file's own; a whole mapping replaces."""
    path = tmp_path / "e.yaml"
    path.write_text("search: {trials: 2}\n")
    added = load_experiment(path, ["objectives.latency_ms=min"]).objectives
    assert added == {"val_accuracy": "max", "size_bytes": "min", "latency_ms": "min"}
    replaced = load_experiment(path, ["objectives={latency_ms: min}"]).objectives
    assert replaced == {"latency_ms": "min"}
    teacher = load_experiment(path, ["teacher.arch.base_channels=16"]).teacher.arch
    assert teacher == {**load_experiment(path).teacher.arch, "base_channels": 16}
    arch = load_experiment(path, ["space.arch.n_stages=[1]"]).space.arch
    assert (arch.family, arch.n_stages) == ("cnn", [1])


@pytest.mark.parametrize(
    ("overrides", "needs"),
    [
        (["search.sampler=random"], "needs search.sampler pls or tpe_local (a move has a parent)"),
        (["search.reuse_training=false"], "needs search.reuse_training: true"),
        (["train.epochs=1"], "needs fewer epochs than train.epochs (1)"),
    ],
)
def test_inheritance_says_what_it_needs(overrides: list[str], needs: str) -> None:
    message = error_for("search.inherit_epochs=1", *overrides)
    # a check across sections names its field first, as single-field errors do
    assert message.startswith("search.inherit_epochs: 1 " + needs), message
    assert message.endswith("; 0 turns it off")
    assert load_experiment(None, ["search.inherit_epochs=1"]).search.inherit_epochs == 1
    # With rungs: the inheriting trials have rungs of their own (search.tune.scheduler).
    both = load_experiment(None, ["search.inherit_epochs=2", "search.scheduler=mo_asha"])
    assert (both.search.inherit_epochs, both.search.scheduler) == (2, "mo_asha")


def test_data_root_without_the_dataset(tmp_path: Path) -> None:
    message = error_for("data.name=mnist", f"data.root={tmp_path}")
    assert message.startswith("data: ")
    assert str(tmp_path / "MNIST" / "raw") in message


def test_data_root_with_the_dataset(data_root: Path) -> None:
    experiment = load_experiment(None, ["data.name=mnist", f"data.root={data_root}"])
    assert experiment.data.root == str(data_root.resolve())


def test_teacher_checkpoint_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "teacher.pt"
    assert f"teacher.checkpoint: teacher checkpoint '{missing}' does not exist" in error_for(
        f"teacher.checkpoint={missing}"
    )


def test_an_empty_checkpoint_path_is_called_empty() -> None:
    """It was "teacher checkpoint '<the working folder>' is a folder" (a helper's sweep)."""
    for key, what in (
        ("teacher.checkpoint", "teacher checkpoint"),
        ("train.init", "checkpoint"),
    ):
        assert error_for(f"{key}=''").startswith(
            f"{key}: {what}: the path is empty; give the file's path, or null for none"
        )


def test_a_teachers_null_key_is_its_default() -> None:
    """As in space.arch: it reached the builder as None (a custom builder's unexpected
    keyword, the cnn family's "base_channels must be an int, got None"; a helper's sweep)."""
    teacher = load_experiment(None, ["teacher.arch.base_channels=null"]).teacher
    assert "base_channels" not in teacher.arch and teacher.arch["family"] == "cnn"
    torchvision = "teacher.arch={family: torchvision, model: resnet18, zero_init_residual: null}"
    assert load_experiment(None, [torchvision]).teacher.arch == {
        "family": "torchvision",
        "model": "resnet18",
    }
    assert "teacher.arch.family: missing" in error_for("teacher.arch={family: null, width: 8}")


def test_several_problems_are_counted() -> None:
    assert "(and 1 more problem(s))" in error_for("search.trials=0", "search.concurrent=0")


def test_override_parses_yaml_values() -> None:
    raw: dict = {}
    apply_override(raw, "space.quant.bits=[4, 8]")
    apply_override(raw, "search.trials=7")
    apply_override(raw, "tracking.uri=sqlite:///x.db")
    assert raw == {
        "space": {"quant": {"bits": [4, 8]}},
        "search": {"trials": 7},
        "tracking": {"uri": "sqlite:///x.db"},
    }
    assert validate_experiment(raw).search.trials == 7


def test_a_dumped_experiment_validates_again_with_its_default_budget() -> None:
    """The budget is refused with mixed: none unless it is the default, which every dump
    holds (the API revalidates an Experiment with overrides from its dump)."""
    from nascomp.spaces.space import _DEFAULT_BUDGET

    experiment = load_experiment(None, [])
    assert experiment.space.quant.budget == _DEFAULT_BUDGET
    again = validate_experiment({**experiment.model_dump(mode="json"), "storage": "elsewhere"})
    assert again.space.quant == experiment.space.quant


def test_numbers_in_exponent_form_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string; the experiment reads it as YAML 1.2 does,
    in a file and in ``--set``, since a number field refuses strings."""
    path = tmp_path / "e.yaml"
    path.write_text("train: {lr: 1e-3}\n")
    experiment = load_experiment(path, ["train.weight_decay=5E-4"])
    assert experiment.train.lr == 0.001 and experiment.train.weight_decay == 0.0005


@pytest.mark.parametrize("item", ["noequals", "=3", "search.trials=[1, 2"])
def test_malformed_override(item: str) -> None:
    with pytest.raises(ConfigError, match="--set"):
        apply_override({}, item)


def test_override_through_a_scalar_is_refused() -> None:
    with pytest.raises(ConfigError, match="'trials' is not a section"):
        apply_override({"search": {"trials": 3}}, "search.trials.x=1")
    for item in (".=3", "search..trials=3", "=3", "search.trials"):
        with pytest.raises(ConfigError, match=r"expected KEY\.PATH=VALUE, e\.g\. search"):
            apply_override({}, item)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_experiment(tmp_path)
    with pytest.raises(ConfigError, match="'/dev/null' is not a regular file"):
        load_experiment(Path("/dev/null"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("search: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_experiment(broken)
    tabbed = tmp_path / "tabbed.yaml"
    tabbed.write_text("search:\n\ttrials: 3\n")
    with pytest.raises(ConfigError, match=r"line 2: found character .* not tabs\)$"):
        load_experiment(tabbed)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfesearch: 1\n")
    with pytest.raises(ConfigError, match=r"binary.yaml: not UTF-8 text \(byte 0\)"):
        load_experiment(binary)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_experiment(listed)


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys: the first section's settings would vanish."""
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  epochs: 2\nsearch: {trials: 3}\ntrain:\n  lr: 0.01\n")
    with pytest.raises(ConfigError) as caught:
        load_experiment(twice)
    assert str(caught.value) == (
        f"{twice}: key 'train' is given twice in one mapping (lines 1 and 4); YAML would keep "
        "the second alone and drop the first without a word: merge them"
    )
    twice.write_text("space:\n  prune: {method: none, method: structured}\n")
    with pytest.raises(ConfigError, match=r"key 'method' is given twice .*\(line 2\)"):
        load_experiment(twice)
    # A merge key (<<) brings keys that the mapping may then override: not a repeat.
    merged = tmp_path / "merged.yaml"
    merged.write_text("x-base: &base {epochs: 2, lr: 0.05}\ntrain:\n  <<: *base\n  epochs: 3\n")
    raw = read_yaml(merged)
    assert raw["train"] == {"epochs": 3, "lr": 0.05}


def test_yaml_is_never_executed(tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text("search: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(hostile)


# The overrides of a lookup search of the quickstart (nb201.table aside)
LOOKUP = [
    "trial=nb201_lookup",
    "space.arch={family: nb201}",
    "space.prune.method=none",
    "space.quant.bits=32",
    "space.distill.enabled=false",
    "objectives={val_accuracy: max, params: min}",
]


def test_nb201_table_is_only_needed_by_lookup_searches(tmp_path: Path, data_root: Path) -> None:
    missing = tmp_path / "nb201.csv"
    assert load_experiment(None, [f"nb201.table={missing}"]).trial == "train"
    message = error_for(*LOOKUP, f"nb201.table={missing}")
    assert f"nb201.table: NAS-Bench-201 table '{missing}' does not exist" in message
    # a folder, and a CSV of something else: every trial failed with KeyError: 'cellstr'
    lookup = LOOKUP
    message = error_for(*lookup, f"nb201.table={tmp_path}")
    assert f"nb201.table: NAS-Bench-201 table '{tmp_path}' is a folder" in message
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    message = error_for(*lookup, f"nb201.table={other}")
    assert message.startswith(
        f"nb201.table: '{other}' is no NAS-Bench-201 table: its first line lacks the column(s) "
        "cellstr, cifar10-val, cifar10-test"
    )
    # a lookup on a schedule it does not have: found once the search had started, leaving
    # its parent run RUNNING
    table = data_root / "nasbench201" / "nb201_accuracy.csv"
    message = error_for(*lookup, f"nb201.table={table}", "search.scheduler=mo_asha")
    assert message.startswith("search.scheduler: mo_asha needs trial: train")


def _table_with(rows: list[str], tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_lookup_tables_rows_are_checked_before_the_search(
    tmp_path: Path, data_root: Path
) -> None:
    """Only the header was: a value that is no percentage was looked up unsaid (150 logged as
    val_accuracy 1.5), and a row the trials could not read, or a cell the table lacks, failed
    each trial that drew it (a helper's sweep). Each is one line naming the line and column."""
    lines = (data_root / "nasbench201" / "nb201_accuracy.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    lookup = LOOKUP

    def with_value(text: str) -> list[str]:  # row 5's cifar10-val (column 4), line 6
        fields = rows[4].split(",")
        fields[3] = text
        return [header, *rows[:4], ",".join(fields), *rows[5:]]

    def fractions() -> list[str]:
        out = [header]
        for row in rows:
            fields = row.split(",")
            out.append(",".join(fields[:2] + [str(float(v) / 100) for v in fields[2:]]))
        return out

    cases = {
        "abc": (
            with_value("abc"),
            "line 6, column cifar10-val: 'abc' is no accuracy in % (0 to 100)",
        ),
        "empty": (with_value(""), "line 6, column cifar10-val: '' is no accuracy in %"),
        "over": (with_value("150"), "line 6, column cifar10-val: '150' is no accuracy in %"),
        "header": ([header], "it holds no row below its header"),
        "short row": (
            [header, *rows[:4], ",".join(rows[4].split(",")[:3]), *rows[5:]],
            "line 6, column cifar10-val: nothing (the row is short) is no accuracy in %",
        ),
        "twice": ([header, *rows, rows[9]], f"line {len(rows) + 2}: cell "),
        "cell": (
            [
                header,
                rows[0].replace("none~0", "conv~0", 1).replace("avg_pool_3x3~0", "conv~0", 1),
                *rows[1:],
            ],
            "line 2, column cellstr: ",
        ),
        "fractions": (fractions(), "the table holds accuracies in % (NAS-Bench-201's 0 to 100)"),
        "short": ([header, *rows[:99]], "lacks 15526 of the space's cells (e.g. |"),
    }
    for name, (table_rows, expected) in cases.items():
        table = _table_with(table_rows, tmp_path, name)
        message = error_for(*lookup, f"nb201.table={table}")
        assert message.startswith(f"nb201.table: '{table}'"), (name, message)
        assert expected in message and "\n" not in message, (name, message)
    # Latin-1 bytes (an é): in the header it was "lacks the column(s) cellstr, ..."; further
    # on, the decoder's position within a block of the file. Now the line, either way.
    for line, name in ((1, "latin_header"), (501, "latin_row")):
        latin = [*lines]
        latin[line - 1] += ",caf\xe9"
        table = tmp_path / f"{name}.csv"
        table.write_bytes("\n".join(latin).encode("latin-1"))
        assert error_for(*lookup, f"nb201.table={table}") == (
            f"nb201.table: '{table}': line {line}: byte 0xe9 is not UTF-8 text; save the table "
            "as UTF-8"
        )
    # the space's own cells alone: a table of a smaller space's cells serves it
    ops = "space.arch.ops=[none, skip_connect]"
    small = [r for r in rows if all(op in ("none", "skip_connect") for op in _ops(r))]
    assert len(small) == 64
    table = _table_with([header, *small], tmp_path, "small")
    assert load_experiment(None, [*lookup, f"nb201.table={table}", ops]).nb201.table == str(table)
    message = error_for(*lookup, f"nb201.table={table}")
    assert "lacks 15561 of the space's cells" in message


def _ops(row: str) -> list[str]:
    cell = row.split(",")[1]
    return [token.split("~")[0] for token in cell.replace("+", "|").split("|") if token]


def test_a_budget_of_null_clears_one_a_shared_file_sets() -> None:
    """The documented default is none; ``budget: null`` was an error."""
    budget = load_experiment(None, ["search.budget.wall_s=60", "search.budget=null"]).search
    assert not budget.budget.given and budget.trials == 20


@pytest.mark.parametrize(
    ("override", "path", "default"),
    [
        ("train.epochs=null", "train.epochs", 10),
        ("train.lr=null", "train.lr", 0.003),
        ("search.concurrent=null", "search.concurrent", 2),
        ("data.val_fraction=null", "data.val_fraction", 0.1),
        ("storage=null", "storage", "nascomp-results"),
        ("objectives=null", "objectives", {"val_accuracy": "max", "size_bytes": "min"}),
        # a space's spec: the schema's range, not the quickstart's (low 0.2)
        ("space.prune.ratio=null", "space.prune.ratio", {"low": 0.1, "high": 0.8}),
        ("space.quant.bits=null", "space.quant.bits", [4, 8, 32]),
        ("space.arch.n_stages=null", "space.arch.n_stages", [1, 2, 3]),
        # a key of a range: that key of the schema's range, the others the quickstart's
        ("space.prune.ratio.high=null", "space.prune.ratio", {"low": 0.2, "high": 0.8}),
        ("space.arch.family=null", "space.arch.family", "cnn"),
        # one objective: dropped, the quickstart's others kept
        ("objectives.latency_ms=null", "objectives", {"val_accuracy": "max", "size_bytes": "min"}),
    ],
)
def test_a_field_set_to_null_takes_its_default(override: str, path: str, default: object) -> None:
    """``--set KEY=null``, which the empty value's error suggests, was refused for nearly
    every field ("Input should be a valid integer; got None": a helper's sweep)."""
    value: object = load_experiment(None, ["train.epochs=3", "train.lr=0.1", override])
    for part in path.split("."):
        value = getattr(value, part)
    if isinstance(default, dict) and isinstance(value, dict) and path.startswith("space."):
        value = {k: value[k] for k in default}  # a range's bounds
    assert value == default


def test_a_misspelt_objective_set_to_null_is_named() -> None:
    """Dropped as null, a misspelt objective went unsaid while the one meant stayed (a
    helper's sweep)."""
    with pytest.raises(ConfigError, match=r"unknown metric 'latency' \(did you mean 'latency_ms'"):
        load_experiment(None, ["objectives.latency=null"])


def test_null_sections_take_their_defaults_and_optional_fields_keep_none() -> None:
    experiment = load_experiment(None, ["train.epochs=3", "train=null", "space.prune=null"])
    assert experiment.train.epochs == 10 and experiment.space.prune.ratio["low"] == 0.1
    # In a file too; a field that takes None keeps it.
    from nascomp.search.experiment import Experiment

    raw = {"train": {"epochs": None}, "data": {"max_test_samples": None}}
    experiment = validate_experiment(raw)
    assert experiment.train.epochs == Experiment().train.epochs
    assert experiment.data.max_test_samples is None


def test_trials_of_null_hand_the_size_back_to_the_default_or_the_budget() -> None:
    assert load_experiment(None, ["search.trials=5", "search.trials=null"]).search.trials == 20
    budget = ["search.trials=5", "search.budget.wall_s=60", "search.trials=null"]
    assert load_experiment(None, budget).search.sized_by_budget
    nsga2 = ["search.sampler=nsga2", "search.population_size=30", "search.budget.wall_s=60"]
    # the quickstart names 20 trials: null lets the budget size it (10,000 at most)
    assert load_experiment(None, [*nsga2, "search.trials=null"]).search.population_size == 30
    with pytest.raises(ConfigError, match=r"^search.population_size: 30 is more than search"):
        load_experiment(None, ["search.sampler=nsga2", "search.population_size=30"])


CUSTOM = "space.arch={family: custom, builder: 'tests.spaces.user_models:tiny', "
TEACHER = "teacher.arch={family: custom, builder: 'tests.spaces.user_models:tiny', "


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # bool("false") was True: a quoted false turned the log scale on.
        (
            [CUSTOM + "width: {low: 4, high: 16, log: 'false'}}"],
            "space.arch.width: range log must be true or false; got 'false'",
        ),
        ([CUSTOM + "width: {low: 4, high: 16, log: 0}}"], "range log must be true or false"),
        # A builder's own leaves are finite numbers too (a trial trained with dropout nan).
        (
            [CUSTOM + "scale: [0.5, .nan]}"],
            "space.arch.scale: must be a finite number; got nan",
        ),
        ([CUSTOM + "scale: .inf}"], "space.arch.scale: must be a finite number; got inf"),
        (
            [CUSTOM + "scale: {low: 1.0, high: .inf}}"],
            "space.arch.scale: must be a finite number; got inf",
        ),
        (
            [CUSTOM + "scale: {low: .nan, high: 0.5}}"],
            "space.arch.scale: must be a finite number; got nan",
        ),
        (
            [CUSTOM + "width: {low: 1, high: 100000000000000000000000}}"],
            "space.arch.width: integer range ends must be within -2**53..2**53",
        ),
        # Optuna narrowed such a range to its last step below high, with a warning alone.
        (
            [CUSTOM + "width: {low: 4, high: 9, step: 2}}"],
            "space.arch.width: range step 2 does not divide 4..9: 9 could never be drawn (the "
            "top would be 8); give high: 8 or 10",
        ),
        (
            ["space.prune.ratio={low: 0.0, high: 0.5, step: 0.2}"],
            "space.prune.ratio: range step 0.2 does not divide 0.0..0.5: 0.5 could never be "
            "drawn (the top would be 0.4); give high: 0.4 or 0.6",
        ),
        # Exact, as Optuna tests it: a tolerance let 5*10**8 steps and a third through.
        (
            [CUSTOM + "width: {low: 0, high: 1000000001, step: 2}}"],
            "space.arch.width: range step 2 does not divide 0..1000000001: 1000000001 could "
            "never be drawn (the top would be 1000000000); give high: 1000000000 or 1000000002",
        ),
        (
            [CUSTOM + "scale: {low: 0.0, high: 1.0, step: 0.3333333333333333}}"],
            "space.arch.scale: range step 0.3333333333333333 does not divide 0.0..1.0",
        ),
        (
            [CUSTOM + "scale: {low: -1.0e+308, high: 1.0e+308}}"],
            "space.arch.scale: range low..high is too wide for a float (high - low overflows)",
        ),
        (
            [TEACHER + "width: .nan}"],
            "teacher.arch.width: must be a finite number; got nan",
        ),
        (
            [TEACHER + "scale: [1.0, .inf]}"],
            "teacher.arch.scale: must be a finite number; got [1.0, inf]",
        ),
        (
            ["teacher.arch={family: torchvision, model: resnet18, width: {low: 8, high: 16}}"],
            "teacher.arch.width: the teacher is one model: give one value, not a range",
        ),
        (  # a built-in family's too: refused when read, not once the search has started
            ["teacher.arch.base_channels={low: 8, high: 16}"],
            "teacher.arch.base_channels: the teacher is one model: give one value, not a range",
        ),
        (
            ["teacher.arch={family: mlp, hidden: {low: 8, high: 16}}"],
            "teacher.arch.hidden: the teacher is one model: give one value, not a range",
        ),
        # What a built-in family's config refuses whatever the data: a list of choices, half
        # a range, a misspelt field (each failed only after the banner, building the teacher)
        (
            ["teacher.arch.base_channels=[8, 16]"],
            "teacher.arch: base_channels must be an int, got [8, 16]",
        ),
        (
            ["teacher.arch.base_channels={low: 8}"],
            "teacher.arch: base_channels must be an int, got {'low': 8}",
        ),
        (
            ["teacher.arch={family: lenet5, fc_features: [10, 20]}"],
            "teacher.arch: fc_features must be an int, got [10, 20]",
        ),
        (
            ["teacher.arch={family: nb201, cel: x}"],
            "teacher.arch: unknown field(s) for model family 'nb201': cel; allowed: cell,",
        ),
        (
            ["teacher.arch={family: lenet300100, hidden: [10]}"],
            "teacher.arch: unknown field(s) for model family 'lenet300100': hidden; allowed: ",
        ),
        # Constraints that no trial can meet trained the whole search to an empty front.
        (
            ['constraints=["val_accuracy >= 1.5"]'],
            "constraints[0]: 'val_accuracy >= 1.5' can never hold: val_accuracy is in [0, 1]",
        ),
        (
            ['constraints=["size_bytes <= -5"]'],
            "constraints[0]: 'size_bytes <= -5' can never hold: size_bytes is more than 0",
        ),
        # a model always has bytes and takes time: at 0 too (a helper's sweep)
        (
            ['constraints=["latency_ms <= 0"]'],
            "constraints[0]: 'latency_ms <= 0' can never hold: latency_ms is more than 0",
        ),
        (
            ['constraints=["nonzero_params <= -1"]'],
            "'nonzero_params <= -1' can never hold: nonzero_params is at least 0",
        ),
        (['constraints=["params < 0"]'], "'params < 0' can never hold"),
        (['constraints=["onnx_agreement > 1"]'], "'onnx_agreement > 1' can never hold"),
        (
            ['constraints=["params <= 100", "params >= 200"]'],
            "constraints[1]: 'params >= 200' and constraints[0] 'params <= 100' can never hold "
            "together",
        ),
        (
            ['constraints=["params > 100", "latency_ms < 3", "params <= 100"]'],
            "constraints[2]: 'params <= 100' and constraints[0] 'params > 100' can never hold",
        ),
        (
            ['constraints=["params <= 200", "params <= 200"]'],
            "constraints[1]: 'params <= 200' repeats constraints[0]",
        ),
    ],
)
def test_meaningless_space_and_constraints_are_refused(overrides: list[str], expected: str) -> None:
    assert expected in error_for(*overrides)


def test_a_teachers_list_argument_is_its_value() -> None:
    """A teacher is one model: a list is its builder's argument (torchvision's
    replace_stride_with_dilation), not a choice; a {low, high} mapping is refused above."""
    teacher = load_experiment(
        None,
        [
            "teacher.arch={family: torchvision, model: resnet18, "
            "replace_stride_with_dilation: [false, true, true]}"
        ],
    ).teacher
    assert teacher.arch["replace_stride_with_dilation"] == [False, True, True]


@pytest.mark.parametrize(
    "constraints",
    [
        ["val_accuracy >= 1", "val_accuracy <= 1"],  # the one value 1 meets both
        ["params >= 100", "params <= 100"],
        ["nonzero_params <= 0"],  # (params are never 0: refused above)
        ["params > 100", "params < 100.5", "latency_ms <= 2"],
    ],
)
def test_constraints_some_value_meets_are_kept(constraints: list[str]) -> None:
    quoted = ", ".join(f'"{c}"' for c in constraints)
    assert load_experiment(None, [f"constraints=[{quoted}]"]).constraints == constraints


def test_yaml_1_1_numbers_that_changed_a_value_are_strings() -> None:
    """010 was 8 (octal) and 1:30 was 90 (base 60), silently; YAML 1.2's forms stay numbers."""
    assert load_yaml("a: [010, 1:30, 007, 1:30.5, 0o10, 0x10, 12, -3, 1_000, 1e-3, .5, -.inf]") == {
        "a": ["010", "1:30", "007", "1:30.5", 8, 16, 12, -3, 1000, 1e-3, 0.5, float("-inf")]
    }
    assert error_for("train.epochs=1:30") == "train.epochs: must be a number; got '1:30'"
    assert error_for("space.quant.bits=[4, 010]") == (
        "space.quant.bits: expected an integer; got '010'"
    )
    assert error_for("tracking.experiment=on") == (
        "tracking.experiment: expected a string; got True (YAML reads it as true or false: "
        "quote it for text)"
    )


def test_yaml_reads_dates_as_strings_and_booleans_as_pyyaml_does() -> None:
    """A date was a ``datetime.date`` no field takes; ``yes`` stays true, as in PyYAML."""
    loaded = load_yaml("a: [2024-01-01, 2024-01-01 10:00:00, yes, off, 1e-3, ~]\nb: 2026-12-05")
    assert loaded == {
        "a": ["2024-01-01", "2024-01-01 10:00:00", True, False, 1e-3, None],
        "b": "2026-12-05",
    }
    assert yaml.safe_load("a: 2024-01-01") != {"a": "2024-01-01"}  # PyYAML's loader as it was
    experiment = load_experiment(None, ["tracking.experiment=2026-12-05"])
    assert experiment.tracking.experiment == "2026-12-05"


def test_a_builder_argument_set_to_null_takes_the_builders_default() -> None:
    """--set could not remove a key the file gives; null now does (the builder's default)."""
    arch = load_experiment(None, [CUSTOM + "width: [8, 16], depth: 2}", "space.arch.depth=null"])
    assert arch.space.arch.arguments() == {"width": [8, 16]}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            [CUSTOM + "use_bn: {low: false, high: true}}"],
            "space.arch.use_bn: a range takes numbers; got {'low': False, 'high': True} (a "
            "choice of true and false, or of words, is a list: [false, true])",
        ),
        (
            [CUSTOM + "width: [8, 16]}", "space.arch.width.high=32"],
            "--set space.arch.width.high: space.arch.width is [8, 16], not a range; set the "
            "whole leaf, e.g. --set 'space.arch.width={low: 1, high: 4}'",
        ),
    ],
)
def test_ranges_asked_of_what_is_no_range_say_so(overrides: list[str], expected: str) -> None:
    assert error_for(*overrides) == expected


def test_an_arch_of_the_default_familys_fields_needs_no_family(tmp_path: Path) -> None:
    """Every field is optional: a file's space.arch of cnn's fields alone is a cnn, as the same
    keys given with --set are (the file's mapping used to be refused for its family)."""
    path = tmp_path / "e.yaml"
    path.write_text("space:\n  arch: {n_stages: [1], base_channels: [8, 16]}\n")
    arch = load_experiment(path, []).space.arch
    assert (arch.family, arch.n_stages, arch.base_channels) == ("cnn", [1], [8, 16])
    assert load_experiment(None, ["space.arch={n_stages: [2]}"]).space.arch.family == "cnn"
    # a misspelt cnn key is told so, not that the family is missing
    path.write_text("space:\n  arch: {N_stages: [1]}\n")
    with pytest.raises(ConfigError, match=r"^space.arch.N_stages: unknown key \(did you mean 'n_"):
        load_experiment(path, [])
    path.write_text("space:\n  arch: {width: [64], depth: [2]}\n")  # mlp's: which family?
    with pytest.raises(ConfigError, match=r"^space.arch.family: missing; give one of"):
        load_experiment(path, [])
