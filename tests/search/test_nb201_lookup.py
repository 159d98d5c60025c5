"""The NAS-Bench-201 lookup trial and the tpe_local sampler, and a real lookup search."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from nascomp.search.driver import trial_base
from nascomp.search.errors import ConfigError
from nascomp.search.experiment import load_experiment, validate_experiment
from nascomp.search.samplers import make_sampler
from nascomp.search.samplers.space import DefineByRun
from nascomp.spaces.nb201 import cell_string
from nascomp.trainers.init import file_digest
from nascomp.trainers.nb201_lookup import cell_from_flat, network_costs, run_lookup_trial
from tests.search.conftest import nascomp, nascomp_here

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nb201.yaml"
ALL_CONV3 = cell_string(["nor_conv_3x3"] * 6)


def test_lookup_reads_the_table_and_builds_the_network() -> None:
    outcome = run_lookup_trial({"arch.cell": ALL_CONV3, "nb201.dataset": "cifar10"})
    # Row 3 of the table? Whatever the row, accuracies are fractions and params the paper's.
    assert outcome.status == "ok"
    assert 0 < outcome.metrics["val_accuracy"] < 1 and 0 < outcome.metrics["test_accuracy"] < 1
    assert outcome.metrics["params"] == 1_531_546  # NAS-Bench-201's largest CIFAR-10 network
    cifar100 = run_lookup_trial({"arch.cell": ALL_CONV3, "nb201.dataset": "cifar100"})
    assert cifar100.metrics["params"] == 1_537_396
    assert cifar100.metrics["val_accuracy"] != outcome.metrics["val_accuracy"]


def test_a_table_edited_in_one_process_is_read_again(tmp_path: Path) -> None:
    """Two lookups of one Python session with the table edited between them: the second looked
    the cell up in the table as first read (cached by path alone)."""
    from nascomp.trainers.nb201_lookup import DEFAULT_TABLE

    table = tmp_path / "nb201.csv"
    shutil.copyfile(DEFAULT_TABLE, table)
    config = {"arch.cell": ALL_CONV3, "nb201.dataset": "cifar10", "nb201.table": str(table)}
    before = run_lookup_trial(config).metrics["val_accuracy"]
    lines = table.read_text().splitlines(keepends=True)
    header = lines[0].strip().split(",")
    index = next(i for i, line in enumerate(lines) if f",{ALL_CONV3}," in line)
    cells = lines[index].rstrip("\n").split(",")
    cells[header.index("cifar10-val")] = "12.5"
    lines[index] = ",".join(cells) + "\n"
    table.write_text("".join(lines))
    assert before != 0.125 and run_lookup_trial(config).metrics["val_accuracy"] == 0.125


def test_the_default_table_is_under_the_data_root_when_one_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nascomp.trainers.nb201_lookup import DEFAULT_TABLE, Nb201LookupConfig

    monkeypatch.delenv("NASCOMP_DATA_ROOT", raising=False)
    # resolved (a checkout under a link): validating an experiment again keeps the path
    assert Nb201LookupConfig().resolved_table() == DEFAULT_TABLE.resolve()
    monkeypatch.setenv("NASCOMP_DATA_ROOT", str(tmp_path))
    assert Nb201LookupConfig().resolved_table() == tmp_path / "nasbench201/nb201_accuracy.csv"
    monkeypatch.chdir(tmp_path)
    given = Nb201LookupConfig(table="mine.csv").resolved_table()
    assert given == tmp_path / "mine.csv"  # the working folder's, as data.root


def test_costs_depend_on_the_ops_not_their_edges() -> None:
    # network_costs caches by the multiset of ops; building both orders proves that is exact.
    from nascomp.compressors.measure import count_macs, count_params
    from nascomp.spaces.models import build_model

    ops = ["nor_conv_1x1", "none", "nor_conv_3x3", "skip_connect", "avg_pool_3x3", "none"]
    for order in (ops, ops[::-1]):
        model = build_model({"family": "nb201", "cell": cell_string(order)}, (3, 16, 16), 120)
        costs = network_costs(cell_string(order), "ImageNet16-120")
        assert costs["params"] == count_params(model)
        assert costs["macs"] == count_macs(model, (3, 16, 16))


def test_lookup_refuses_settings_the_table_does_not_know() -> None:
    with pytest.raises(ConfigError, match=r"^space\.quant\.bits: trial nb201_lookup needs 32 "):
        load_experiment(EXAMPLE, ["space.quant.bits=[8, 32]"])
    # named by the field (it said "experiment:", a helper's sweep)
    with pytest.raises(ConfigError, match=r"^objectives\.latency_ms: trial nb201_lookup does not"):
        load_experiment(EXAMPLE, ["objectives={val_accuracy: max, latency_ms: min}"])
    with pytest.raises(ConfigError, match=r"^constraints\[1\]: trial nb201_lookup does not "):
        load_experiment(EXAMPLE, ["constraints=['params <= 1e6', 'latency_ms <= 2']"])


def test_the_tables_digest_is_filled_in_and_a_changed_table_refused(tmp_path: Path) -> None:
    """Every trial logs the table's SHA-256 (reproduce says when it changed since); an
    experiment that holds one (a resumed search's) refuses a table changed since."""
    table = tmp_path / "nb201.csv"
    shutil.copyfile(load_experiment(EXAMPLE).nb201.resolved_table(), table)
    experiment = load_experiment(EXAMPLE, [f"nb201.table={table}"])
    assert experiment.nb201.table_sha256 == file_digest(table)
    assert trial_base(experiment)["nb201.table_sha256"] == file_digest(table)
    again = validate_experiment(experiment.model_dump())  # the same table: the same digest
    assert again.nb201.table_sha256 == experiment.nb201.table_sha256
    with table.open("a") as handle:
        handle.write("\n")
    with pytest.raises(ConfigError, match=r"^nb201\.table_sha256: the table .* is not the one"):
        validate_experiment(experiment.model_dump())


def test_tpe_local_never_repeats_a_point() -> None:
    experiment = load_experiment(EXAMPLE, ["search.trials=60", "search.sampler=tpe_local"])
    space = DefineByRun(experiment.space.params(), trial_base(experiment))
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=make_sampler(experiment.search)
    )
    study.optimize(
        lambda t: tuple(
            run_lookup_trial(space.config(t)).metrics[m] for m in ("val_accuracy", "params")
        ),
        n_trials=60,
    )
    after_warmup = [tuple(sorted(t.params.items())) for t in study.trials[18:]]
    assert len(set(after_warmup)) == len(after_warmup)


@pytest.mark.e2e
def test_lookup_search_pick_plot_and_reproduce(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    common = ["--tracking-uri", uri, "--experiment", "nb"]
    csv_table = workdir / "nb201.csv"  # the user's copy, which changes after the search below
    shutil.copyfile(load_experiment(str(EXAMPLE)).nb201.resolved_table(), csv_table)
    result = nascomp(
        "search",
        str(EXAMPLE),
        "--trials",
        "16",
        "--set",
        f"storage={workdir / 'results'}",
        "--set",
        f"nb201.table={csv_table}",
        "--set",
        'constraints=["params <= 800000"]',
        *common,
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on NAS-Bench-201's cifar10 table (lookup), 16 trials" in result.stdout  # not digits
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("nb")
    parent = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`nascomp.role` = 'search'"
    )[0]
    # The parent run draws the search's progress: one hypervolume step per ended trial.
    history = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert sorted(m.step for m in history) == list(range(1, 17))
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert all(b >= a for a, b in itertools.pairwise(values)) and values[-1] > 0
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.json", "pareto.png"} <= names
    # The artifact names the constraint its front meets, as `pareto --json` does.
    logged = client.download_artifacts(parent.info.run_id, "pareto_front.json", str(workdir))
    assert json.loads(Path(logged).read_text())["constraints"] == ["params <= 800000"]
    # Every child says whether it met the constraint; the front holds feasible ones only.
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    for child in children:
        assert child.data.params["nb201.table_sha256"] == file_digest(csv_table)
        feasible = child.data.metrics["params"] <= 800_000
        assert child.data.tags["nascomp.feasible"] == str(feasible).lower()
    # One named by its run id that broke it is reproduced as asked, and said to be off the
    # front (--rank and --pick never reach it; it said nothing of it, a helper's sweep).
    broke = next(c for c in children if c.data.tags["nascomp.feasible"] == "false")
    again = nascomp_here(capsys, "reproduce", broke.info.run_id, *common)
    assert again.returncode == 0, again.stderr
    params = f"{broke.data.metrics['params']:,.0f}"
    assert again.stdout.splitlines()[1] == (
        f"note: run {broke.info.run_id} breaks its search's params <= 800000 (params {params}): "
        "it is not on the front"
    )
    # The reading commands run in this process (the console script ran the search above).
    read = json.loads(nascomp_here(capsys, "pareto", "--json", *common).stdout)
    front = read["front"]
    assert front and all(row["objectives"]["params"] <= 800_000 for row in front)
    assert read["constraints"] == ["params <= 800000"]
    table = nascomp_here(capsys, "pareto", *common).stdout
    assert "; subject to params <= 800000)" in table.splitlines()[0]

    plot = workdir / "front.png"
    shown = nascomp_here(capsys, "pareto", "--plot", str(plot), *common)
    assert shown.returncode == 0 and plot.stat().st_size > 5000
    page = workdir / "front.html"
    shown = nascomp_here(capsys, "pareto", "--plot", str(page), *common)
    assert shown.returncode == 0 and "NAS-Bench-201 cifar10 lookup" in page.read_text()

    best = nascomp_here(capsys, "pareto", "--pick", "max val_accuracy", *common)
    assert best.returncode == 0, best.stderr
    best_id = best.stdout.split()[0]
    top = max(front, key=lambda row: row["objectives"]["val_accuracy"])
    assert best_id == top["run_id"]
    # As JSON: the same run, its search, and the model as the table describes it.
    picked = json.loads(
        nascomp_here(capsys, "pareto", "--pick", "max val_accuracy", "--json", *common).stdout
    )
    assert (picked["run_id"], picked["search_run_id"]) == (best_id, read["search_run_id"])
    assert picked["model"] == top["model"] and picked["model"] in best.stdout
    assert picked["params"] == top["params"]
    assert picked["metrics"]["val_accuracy"] == top["objectives"]["val_accuracy"]
    knee = nascomp_here(capsys, "pareto", "--pick", "knee", *common)
    assert knee.returncode == 0 and knee.stdout.split()[0] in {row["run_id"] for row in front}
    again = nascomp("reproduce", "--pick", "max val_accuracy", *common, cwd=workdir)
    assert again.returncode == 0, again.stderr
    assert f"reproducing {best_id}" in again.stdout
    exported = nascomp_here(capsys, "reproduce", best_id, "--export", str(workdir / "x"), *common)
    assert exported.returncode == 2 and "is a NAS-Bench-201 lookup: no trained" in exported.stderr
    assert "val_accuracy" in again.stdout and "=" in again.stdout
    assert "changed since" not in again.stdout
    # The table edited since: the reproduction says so (it printed the new value unsaid).
    lines = csv_table.read_text().splitlines(keepends=True)
    cellstr = cell_from_flat(client.get_run(best_id).data.params)
    index = next(i for i, line in enumerate(lines) if f",{cellstr}," in line)
    header = lines[0].strip().split(",")
    cells = lines[index].rstrip("\n").split(",")
    cells[header.index("cifar10-val")] = "99.5"
    lines[index] = ",".join(cells) + "\n"
    csv_table.write_text("".join(lines))
    edited = nascomp_here(capsys, "reproduce", best_id, *common)
    assert edited.returncode == 0, edited.stderr
    assert re.search(r"^  val_accuracy +\S+ +0\.9950$", edited.stdout, re.MULTILINE), edited.stdout
    assert edited.stdout.endswith(
        f"note: the table {csv_table} changed since the search read it (its SHA-256): the "
        "reproduced accuracies are today's table's\n"
    )
    # The table gone (moved, another machine): one line, no header, where it was a traceback.
    moved = csv_table.rename(workdir / "moved.csv")
    gone = nascomp_here(capsys, "reproduce", best_id, *common)
    assert gone.returncode == 2 and gone.stdout == ""
    assert gone.stderr == (
        f"nascomp: error: run {best_id}: its NAS-Bench-201 table '{csv_table}' (nb201.table) does "
        "not exist: to look the cell up again, put the table the search read back there or give "
        "--table PATH where it is now\n"
    )
    # --table: where it is now (still the edited table, so still said)
    found = nascomp_here(capsys, "reproduce", best_id, "--table", str(moved), *common)
    assert found.returncode == 0, found.stderr
    assert re.search(r"^  val_accuracy +\S+ +0\.9950$", found.stdout, re.MULTILINE), found.stdout
    assert f"note: the table {moved} changed since the search read it" in found.stdout
    absent = nascomp_here(capsys, "reproduce", best_id, "--table", str(csv_table), *common)
    assert absent.returncode == 2 and absent.stdout == ""
    assert absent.stderr == (
        f"nascomp: error: run {best_id}: its NAS-Bench-201 table '{csv_table}' (--table) does "
        "not exist: to look the cell up again, give the table the search read\n"
    )
    bad = nascomp_here(capsys, "pareto", "--pick", "max speed", *common)
    assert bad.returncode == 2 and "unknown metric 'speed'" in bad.stderr
    # The plot's format follows its suffix.
    formats = {"front.svg": b"<?xml", "front.pdf": b"%PDF", "front.jpg": b"\xff\xd8"}
    for name, magic in formats.items():
        drawn = nascomp_here(capsys, "pareto", "--plot", str(workdir / name), *common)
        assert drawn.returncode == 0 and (workdir / name).read_bytes().startswith(magic), name
    # A search run is read in its own experiment, whatever --experiment says.
    elsewhere = ["--tracking-uri", uri, "--experiment", "Default"]
    run = parent.info.run_id
    by_run = nascomp_here(capsys, "pareto", "--json", "--search-run", run, *elsewhere)
    assert json.loads(by_run.stdout)["front"] == front
    # and the user is told where it was read, not left to think --experiment was used
    assert f"note: run {run} is in experiment 'nb', not --experiment 'Default'" in by_run.stderr
    assert "note: run" not in nascomp_here(capsys, "pareto", "--search-run", run, *common).stderr


def test_a_front_emptied_by_constraints_says_so(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}", "--experiment", "nb"]
    result = nascomp(
        "search", str(EXAMPLE), "--trials", "3", "--set", f"storage={workdir / 'results'}",
        "--set", 'constraints=["params <= 1"]', *common, cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr[-3000:]
    assert "(3 ok (3 broke a constraint), 0 infeasible" in result.stdout
    assert result.stdout.count("(breaks params <= 1: off the front)") == 3  # each trial's line
    why = "all 3 trials that ended ok broke a constraint (params <= 1)"
    assert f"  (empty: {why})" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == f"nascomp: error: the front is empty: {why}"
    assert f"  (empty: {why})" in nascomp_here(capsys, "pareto", *common).stdout
    again = nascomp_here(capsys, "reproduce", "--rank", "1", *common)
    assert again.returncode == 2 and f"is empty ({why}): no model to reproduce" in again.stderr
    knee = nascomp_here(capsys, "pareto", "--pick", "knee", *common)  # said only "empty"
    assert knee.stderr.strip() == f"nascomp: error: --pick knee: the front is empty: {why}"
    plot = workdir / "front.png"  # did not name --plot
    drawn = nascomp_here(capsys, "pareto", "--plot", str(plot), *common)
    assert drawn.returncode == 2 and not plot.exists()
    assert drawn.stderr.strip() == (
        "nascomp: error: --plot: nothing to plot: no feasible trial finished in this search"
    )


@pytest.mark.parametrize("sampler", ["tpe", "tpe_local", "nsga2", "pls"])
def test_making_a_sampler_with_constraints_warns_the_user_of_nothing(sampler: str) -> None:
    """Optuna 5 deprecates ``constraints_func`` while its samplers still take it: the warning
    is for nascomp's code, not for the user, and its text quotes the name in backticks."""
    import warnings

    from nascomp.search.experiment import load_experiment
    from nascomp.search.samplers import make_sampler

    search = load_experiment(None, [f"search.sampler={sampler}"]).search
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_sampler(search, constraints_func=lambda trial: [0.0])
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]


def test_reproduce_with_table_of_a_run_that_logged_no_digest_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lookup logged before nb201.table_sha256 existed: the table given is looked up, and
    whether it is the one the search read cannot be known."""
    from types import SimpleNamespace

    from nascomp.search.cli import _reproduce_lookup
    from nascomp.trainers.nb201_lookup import DEFAULT_TABLE

    table = tmp_path / "here.csv"
    shutil.copyfile(DEFAULT_TABLE, table)
    params = {"trial": "nb201_lookup", "arch.cell": ALL_CONV3, "nb201.dataset": "cifar10"}
    params["nb201.table"] = "/elsewhere/nb201.csv"
    logged = run_lookup_trial({**params, "nb201.table": str(table)}).metrics
    record = SimpleNamespace(run_id="r1", params=params, metrics=logged)
    assert _reproduce_lookup(record, table, None) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  val_accuracy +\S+ +\S+  =$", out, re.MULTILINE), out
    assert out.endswith(
        f"note: run r1 logged no SHA-256 of its table (an older search): whether {table} holds "
        "what /elsewhere/nb201.csv held is not known\n"
    )
