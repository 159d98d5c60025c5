"""Check the user's own code before the search writes anything or starts Ray.

A builder that does not return an ``nn.Module``, whose output has the wrong shape, or that
raises, and a dataset factory that returns the wrong thing, are mistakes in the experiment:
they must stop ``nascomp search`` with one line naming the field and the function, exit code 2,
and no MLflow run, not fail every trial one by one. Only models the user brings (a ``custom``
builder, torchvision, timm, a plugin's family) are built here; nascomp's own families are
tested with the package. Building one architecture of the space (each leaf's first value),
that one with each leaf's other values (one leaf at a time, ``MAX_VARIED_BUILDS`` at most) and
the teacher takes a fraction of a second for the models a search trains.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nascomp.compressors.allocation import quantizable_layers
from nascomp.compressors.layers import (
    QUANTIZED_LAYER_NAMES,
    is_quantized_layer,
    is_weight_layer,
    layer_kinds,
    quantized_layer_names,
    weight_layers,
    weight_names,
)
from nascomp.compressors.pruning import (
    PruneConfig,
    PruningError,
    ignored_layers,
    make_pruner,
    prunable_layers,
)
from nascomp.compressors.size import float_weights
from nascomp.search.errors import ConfigError, exception_line
from nascomp.search.experiment import Experiment, teacher_job, trial_constants
from nascomp.search.shipping import user_code_paths
from nascomp.spaces.mixed import PER_LAYER
from nascomp.spaces.models import (
    IDS_FAMILIES,
    IMAGE_FAMILIES,
    InfeasibleArchitecture,
    build_model,
    describe_arch,
    model_family,
)
from nascomp.spaces.params import Param, to_param
from nascomp.spaces.space import ARCH_SPACES
from nascomp.spaces.userfn import NotLogitsError, UserCodeError, calling, reload_if_changed
from nascomp.trainers.data import USER_SOURCES
from nascomp.trainers.init import apply_weights, initial_weights
from nascomp.trainers.teacher import load_teacher_checkpoint, teacher_path

# Families whose builders ship with nascomp and are covered by its tests.
_OWN_MODULES = ("nascomp.spaces.cnn", "nascomp.spaces.nb201", "nascomp.spaces.classic")


def brings_own_model(arch: dict[str, Any]) -> bool:
    """True when ``arch`` is built by code from outside nascomp (or by a model zoo)."""
    family = model_family(arch.get("family"))
    return family is not None and family.build.__module__ not in _OWN_MODULES


def check_user_code(experiment: Experiment, notes: list[str] | None = None) -> Experiment:
    """Load the data and build the student (one point of the space) and the teacher when the
    user brought them; raise :class:`ConfigError` naming the field on the first problem.
    ``notes`` receives what the user should know but is no error (a student whose weights are
    mostly in layers nascomp does not quantize, a validation split too small to rank trials).

    Returns the experiment the search runs: with ``space.quant.groups: layers``, its groups
    resolved from the student's quantized layers (one group each, see
    ``spaces.mixed.per_layer_groups``)."""
    if experiment.trial != "train":
        return experiment
    for path in user_code_paths(experiment):  # checked, and the teacher built, as files are now
        try:
            reload_if_changed(path, path)
        except UserCodeError as exc:
            raise ConfigError(str(exc)) from None
    per_layer = experiment.space.quant.groups == PER_LAYER
    student = experiment.space.arch.first_arch()
    teacher = experiment.teacher.arch if experiment.space.distillation_possible() else None
    checked = [("space.arch", student)]
    if teacher is not None:
        checked.append(("teacher.arch", teacher))
    checkpoint = experiment.teacher.checkpoint if teacher is not None else None
    # A teacher the experiment names is built on the data's inputs here, one of nascomp's
    # families too: lenet5 on 8x8 digits failed only after the banner, when it was trained.
    # Not when it is cached: it fitted these inputs then (and the data would be loaded for
    # the check alone: 3 s for MNIST's folders).
    named_teacher = (
        teacher is not None
        and "arch" in experiment.teacher.model_fields_set
        and not teacher_path(teacher_job(experiment)).is_file()
    )
    checked = [
        (field, arch)
        for field, arch in checked
        if brings_own_model(arch) or (field == "teacher.arch" and (checkpoint or named_teacher))
    ]
    ignore = tuple(experiment.space.prune.ignore)
    init = experiment.train.init
    groups = _user_groups(experiment)
    if (ignore or per_layer or init or groups) and not any(f == "space.arch" for f, _ in checked):
        # the patterns and the starting weights are checked on the student
        checked = [("space.arch", student), *checked]
    # The user's own data is read here (an image folder's files too: a truncated JPEG or an
    # empty class folder is named before anything runs); the bundled datasets need no check.
    if not checked and experiment.data.name not in (*USER_SOURCES, "imagefolder"):
        return experiment
    try:
        # The workers' thread count: the driver makes the same stream-or-memory decision.
        data = experiment.data.load(threads=trial_constants(experiment)["threads"])
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(_located("data", exc)) from None
    official = getattr(data, "official_val", False)  # an image folder's val/
    for note in (
        small_validation_note(len(data.val), experiment.data.val_fraction, official),
        untrained_classes_note(data.train.labels, data.n_classes, data.classes),
        unvalidated_classes_note(
            data.val.labels, data.train.labels, data.n_classes, data.classes, official
        ),
        *data.notes,
    ):
        if note is not None and notes is not None:
            notes.append(note)
    augment = experiment.train.augment.enabled()
    if data.input_dtype.is_floating_point and _default_space_cannot_take(
        experiment, data.input_shape
    ):
        experiment = _with_feature_space(experiment)
        student = experiment.space.arch.first_arch()
        checked = [(f, student if f == "space.arch" else arch) for f, arch in checked]
        if notes is not None:
            space = experiment.space.arch
            notes.append(
                f"space.arch: the default space searches CNNs for images; inputs of shape "
                f"{tuple(data.input_shape)} search an MLP (depth {space.depth} x width "
                f"{space.width}). Set space.arch to choose"
            )
    if (
        teacher is not None
        and data.input_dtype.is_floating_point
        and _default_teacher_cannot_take(experiment, data.input_shape)
    ):
        experiment, teacher = _with_feature_teacher(experiment)
        if notes is not None:
            notes.append(
                f"teacher.arch: the default teacher is a CNN for images; inputs of shape "
                f"{tuple(data.input_shape)} are taught by an MLP (hidden layers "
                f"{'-'.join(map(str, FEATURE_TEACHER['hidden']))}). Set teacher.arch to choose"
            )
    if data.input_dtype.is_floating_point:
        _check_input_rank(data.input_shape, student, teacher, augment)
    else:
        _check_ids(data.input_shape, student, teacher, augment)
    methods = to_param("space.prune.method", experiment.space.prune.method).possible_values()
    unstructured = "unstructured" in (methods or ())
    state = torch.random.get_rng_state()
    first_noted = False  # the first architecture's float weights earned a note
    try:
        for field, arch in checked:
            try:
                model = build_model(arch, data.input_shape, data.n_classes, data.input_dtype)
            except InfeasibleArchitecture as exc:
                if field == "teacher.arch":  # one architecture: nothing else to train
                    raise ConfigError(_located(field, exc)) from None
                continue  # the user's documented way to skip a combination
            except (ValueError, TypeError) as exc:
                hint = _layout_hint(experiment, data.input_shape, exc)
                raise ConfigError(_located(field, exc) + hint) from None
            _check_largest_ids(field, model, data)
            if field == "teacher.arch" and checkpoint:
                _check_checkpoint(model, checkpoint)
            if not (field == "space.arch" and init):  # trials start from train.init's weights
                _check_finite_outputs(field, arch, model, data, checkpoint)
            with layer_kinds(experiment.space.quant.layers):  # conv2d_linear: others stay float
                note = float_weights_note(model) if field == "space.arch" else None
                whole = unpruned_weights_note(model) if field == "space.arch" else None
            if note is not None and notes is not None:
                notes.append(note)
            if whole is not None and notes is not None and unstructured:
                notes.append(whole)
            if field == "space.arch":
                first_noted = note is not None
            if field == "space.arch" and init:
                _check_init(experiment, model, data, notes)
            if field == "space.arch" and ignore:
                try:
                    ignored_layers(model, ignore)
                except ValueError as exc:
                    raise ConfigError(f"space.{exc}") from None
            if field == "space.arch":  # after prune.ignore's patterns are known to match
                _check_compressible(experiment, model, data)
            if field == "space.arch" and groups and _check_groups(experiment, groups, model, data):
                quant = experiment.space.quant.with_groups_covering()
                space = experiment.space.model_copy(update={"quant": quant})
                experiment = experiment.model_copy(update={"space": space})
            if field == "space.arch" and per_layer:
                experiment = _with_layer_groups(experiment, list(quantizable_layers(model)))
                per_layer = False
        if brings_own_model(student):
            note = _check_varied(experiment, data.input_shape, data.n_classes, data.input_dtype)
            if note is not None and notes is not None and not first_noted:
                notes.append(note)
        if init and notes is not None:
            note = _init_misses(experiment, data)
            if note is not None:
                notes.append(note)
    finally:
        torch.random.set_rng_state(state)  # building drew weights: leave the driver as it was
    if per_layer:
        raise ConfigError(
            "space.quant.groups: 'layers' takes its groups from the space's first architecture, "
            f"which its builder declined ({student}); give groups of module-name globs instead"
        )
    return experiment


def _check_largest_ids(field: str, model: nn.Module, data: Any) -> None:
    """Integer ids held in memory: the model must take the largest id of each position (over
    train, val and test) as it takes id 0, the builder's check's probe. An ``nn.Embedding``
    built for fewer ids than the data holds passed it, and every trial then failed with
    IndexError (a helper's sweep). Each position's own largest: a model may embed each column
    of categories with a table of its own size."""
    parts = [getattr(data, f"{role}_x", None) for role in ("train", "val", "test")]
    if any(x is None for x in parts) or parts[0].dtype.is_floating_point:
        return  # streamed, or not ids
    named = [(role, x) for role, x in zip(("train", "val", "test"), parts, strict=True)]
    named = [(role, x) for role, x in named if x.numel()]
    largest = torch.stack([x.amax(dim=0) for _, x in named]).amax(dim=0).unsqueeze(0)
    smallest = torch.stack([x.amin(dim=0) for _, x in named]).amin(dim=0).unsqueeze(0)
    if (exc := _fails_on(model, largest)) is not None:
        top = int(largest.max())
        raise ConfigError(
            f"{field}: the model fails on the data's largest ids (each position's largest over "
            f"train, val and test; {top} at most), though it takes id 0: {exception_line(exc)} "
            f"(an nn.Embedding for them needs num_embeddings of at least {top + 1})"
        )
    # The negative ids too (-1 for padding, pandas.factorize's missing value): an nn.Embedding
    # takes 0 and up, and every trial failed with IndexError (with distillation, the
    # teacher's traceback; a helper's sweep). A model that maps them itself (x + 1) passes.
    if int(smallest.min()) < 0 and (exc := _fails_on(model, smallest)) is not None:
        role, x = next((role, x) for role, x in named if bool((x < 0).any()))
        sample, *position = (int(i) for i in (x < 0).nonzero()[0])
        where = f"{role} sample {sample}" + (f", position {position[0]}" if position else "")
        raise ConfigError(
            f"{field}: the model fails on the data's negative ids ({int(x[x < 0][0])} in "
            f"{where}): {exception_line(exc)} (an nn.Embedding takes ids from 0: give padding or "
            "a missing value an id of its own)"
        )


def _fails_on(model: nn.Module, ids: torch.Tensor) -> Exception | None:
    """What ``model`` raises on the batch ``ids`` in eval mode (its mode kept), or None."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(ids.clone())
    except Exception as exc:
        return exc
    finally:
        model.train(was_training)
    return None


# Training inputs the built model is run on before anything trains.
FINITE_PROBE = 32


def _check_finite_outputs(
    field: str, arch: dict[str, Any], model: nn.Module, data: Any, checkpoint: str | None = None
) -> None:
    """The model's weights, as built (or as the teacher's checkpoint loaded them), and its
    outputs on the first training inputs, in eval and in train mode, must be finite: a forward
    that takes the log or square root of a negative input, or divides by a sum that is zero,
    passed every check, and each trial then failed with "training diverged" after its data
    had loaded, as if the learning rate were wrong."""
    # the user's function by the name the experiment gives it, as the builder's checks do
    name = (
        f"the model from builder {arch['builder']}"
        if isinstance(arch.get("builder"), str)
        else describe_arch(arch)
    )
    loaded = field == "teacher.arch" and checkpoint
    broken = [
        key
        for key, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if broken:
        shown = ", ".join(broken[:3]) + (", ..." if len(broken) > 3 else "")
        source = f"teacher.checkpoint {checkpoint}" if loaded else f"{field}: {name}, as built,"
        raise ConfigError(f"{source} holds NaN or infinite weights ({shown})")
    inputs = data.train.head(FINITE_PROBE)
    was_training = model.training
    kept = {key: tensor.clone() for key, tensor in model.named_buffers()}  # batch norm's stats
    try:
        for mode in ("eval", "train"):
            model.train(mode == "train")
            with torch.no_grad():
                out = model(inputs)
            if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                return
            rows = out.reshape(out.shape[0], -1) if out.ndim else out.reshape(1, 1)
            # -inf logits mask classes (softmax gives them 0): wrong only in a row all -inf
            nan = rows.isnan().any(dim=1)
            inf = (rows == torch.inf).any(dim=1) | (rows == -torch.inf).all(dim=1)
            if bool((nan | inf).any()):
                kinds = " and ".join(
                    kind for kind, hit in (("NaN", nan), ("infinite", inf)) if bool(hit.any())
                )
                weights = " with teacher.checkpoint's weights" if loaded else " before any training"
                raise ConfigError(
                    f"{field}: {name} gives {kinds} outputs for {int((nan | inf).sum())} of the "
                    f"first {inputs.shape[0]} training inputs{weights} (in {mode} mode; the "
                    f"inputs, as normalised, range from {float(inputs.min()):.3g} to "
                    f"{float(inputs.max()):.3g}): every trial would diverge; look for a log, "
                    "square root or division of values that can be negative or zero in its "
                    "forward"
                )
    except ConfigError:
        raise
    except Exception:
        return  # the builder's probe and the trials name what a failing forward does
    finally:
        model.train(was_training)
        with torch.no_grad():
            for key, tensor in model.named_buffers():
                tensor.copy_(kept[key])


def _check_compressible(experiment: Experiment, model: nn.Module, data: Any) -> None:
    """Refuse compression the student cannot take: a model without one layer QAT quantizes
    (weights used through ``F.conv2d``) failed every trial below 32 bits, one without a layer
    unstructured pruning zeroes every unstructured trial, and one that structured pruning
    cannot take (``_check_structured``) every structured trial, one trial after another. Only
    when the space has this one model (a list of builders may hold others that can)."""
    arch = {param.name: param for param in experiment.space.arch.params()}
    if any(arch[name].kind != "fixed" for name in ("arch.builder", "arch.model") if name in arch):
        return
    space, name = experiment.space, type(model).__name__
    bits = to_param("space.quant.bits", space.quant.bits).possible_values() or ()
    if space.quant.mixed != "none" or any(int(b) != 32 for b in bits):
        with layer_kinds(space.quant.layers):
            found = quantizable_layers(model)
        if not found:
            field = "space.quant.bits" if space.quant.mixed == "none" else "space.quant.mixed"
            raise ConfigError(
                f"{field}: {name} has no layer QAT quantizes ({QUANTIZED_LAYER_NAMES} modules "
                f"of quant.layers {space.quant.layers!r}; a weight used through F.conv2d or "
                "F.linear is none of them), so every trial below 32 bits would fail: give "
                "space.quant.bits: [32]"
            )
    methods = to_param("space.prune.method", space.prune.method).possible_values() or ()
    if "unstructured" in methods and not prunable_layers(model, tuple(space.prune.ignore)):
        kinds = " / ".join(kind.__name__ for kind in weight_layers())
        raise ConfigError(
            f"space.prune.method: {name} has no layer unstructured pruning zeroes ({kinds} "
            "modules outside prune.ignore), so every unstructured trial would fail: leave "
            "unstructured out of space.prune.method"
        )
    if "structured" in methods:
        _check_structured(experiment, data)


# Families of models by name from a zoo, whose structured pruning the first trial tries.
_ZOO_FAMILIES = ("torchvision", "timm")


def _check_structured(experiment: Experiment, data: Any) -> None:
    """Prune the space's one model, built under the experiment's seed, at the space's lowest
    structured ratio, as a trial's schedule ends. A model torch-pruning cannot trace, in which
    it finds no channel it may remove, or which no longer runs once pruned (a convolution
    called twice in one forward, a grouped convolution reading a concatenation) failed every
    structured trial with the same reason.

    Only for a space of one model (every arch leaf fixed: of several, others than the first
    may prune, as ``n_stages: [1, 2]`` with the first stage ignored), and not for
    torchvision's and timm's: they are the models torch-pruning is tested on (the docs name
    the ones it cannot prune), and pruning one of theirs takes as long as in a trial
    (timed at a load of 9 on 2 cores: resnet18 6 s, densenet121 35 s), a wait before every
    search."""
    arch = experiment.space.arch
    if arch.family in _ZOO_FAMILIES or any(p.kind != "fixed" for p in arch.params()):
        return  # a space of several models: others than the first may prune (n_stages [1, 2])
    prune = experiment.space.prune
    ratio = _lowest_ratio(to_param("space.prune.ratio", prune.ratio))
    if ratio is None:
        return
    config = PruneConfig(
        method="structured",
        ratio=ratio,
        importance=str(_first(to_param("space.prune.importance", prune.importance))),
        scope=str(_first(to_param("space.prune.scope", prune.scope))),
        ignore=tuple(prune.ignore),
        **(
            {"analysis_timeout_s": prune.analysis_timeout_s}
            if prune.analysis_timeout_s is not None
            else {}
        ),
    )
    # Built again under one seed: which channels a global ranking removes follows the
    # weights, and a failure that depends on them came and went from one run to the next.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(experiment.search.seed)
        try:
            model = build_model(
                arch.first_arch(), data.input_shape, data.n_classes, data.input_dtype
            )
        except Exception:  # the checks before named what fails; the first trial says it
            return
    example = torch.zeros(2, *data.input_shape, dtype=data.input_dtype)
    # torch-pruning's analysis may take minutes on a large model, and loops on some couplings
    # until analysis_timeout_s: a line says what the search waits for
    who = (
        f"the check that structured pruning runs on the model (torch-pruning's analysis; "
        f"space.prune.analysis_timeout_s: {config.analysis_timeout_s:g} s)"
    )
    try:
        with calling(who):
            make_pruner(model, config, example).update(1.0)
    except PruningError as exc:
        leave = (
            "" if "unstructured" in str(exc) else "; or leave structured out of space.prune.method"
        )
        raise ConfigError(
            f"space.prune.method: every structured trial would fail: {exc}{leave}"
        ) from None


def _lowest_ratio(ratio: Param) -> float | None:
    """The smallest ratio above 0 a structured trial can draw (half the high end of a range
    that starts at 0), or None when every one is 0."""
    values = ratio.possible_values()
    if values is not None:
        positive = [float(v) for v in values if float(v) > 0]
        return min(positive) if positive else None
    low, high = float(ratio.low or 0.0), float(ratio.high or 0.0)
    return low if low > 0 else (high / 2 if high > 0 else None)


def _first(param: Param) -> Any:
    values = param.possible_values()
    assert values, param.name  # importance and scope are choices
    return values[0]


def _user_groups(experiment: Experiment) -> dict[str, list[str]]:
    """``space.quant.groups`` of ``mixed: groups`` given as globs (not ``layers``), or {}."""
    quant = experiment.space.quant
    if quant.mixed != "groups" or not isinstance(quant.groups, Mapping):
        return {}
    return {str(name): list(globs) for name, globs in quant.groups.items()}


def _check_groups(
    experiment: Experiment, groups: dict[str, list[str]], model: nn.Module, data: Any
) -> bool:
    """Each group's globs must match a layer the model quantizes, in the first architecture
    or one of those the pre-flight varies (a deeper one may hold a layer the first lacks), and
    no layer of the first may match two groups: else every trial would run at widths the
    run's name does not say, or stop after it trained.

    Returns whether the groups cover every quantized layer of all those architectures: then
    no layer takes the trial-wide ``bits``, which is not searched (two trials differing in it
    alone would be one model)."""
    names = set(quantizable_layers(model))
    for name in sorted(names):
        matched = sorted(g for g, globs in groups.items() if _matches(name, globs))
        if len(matched) > 1:
            raise ConfigError(
                f"space.quant.groups: layer {name!r} matches groups {matched}; make them disjoint"
            )
    for _, _, arch in experiment.space.arch.varied_archs()[:MAX_VARIED_BUILDS]:
        try:
            other = build_model(arch, data.input_shape, data.n_classes, data.input_dtype)
        except (InfeasibleArchitecture, ValueError, TypeError):
            continue  # the builder's own checks name a bad value elsewhere
        names |= set(quantizable_layers(other))
    unmatched = [g for g, globs in groups.items() if not any(_matches(n, globs) for n in names)]
    if unmatched:
        listed = sorted(names)
        shown = ", ".join(repr(n) for n in listed[:6])
        more = f", ... ({len(names)} in all)" if len(names) > 6 else ""
        example = f"{listed[0].split('.')[0]}.*" if listed else "*"
        raise ConfigError(
            f"space.quant.groups.{unmatched[0]}: {groups[unmatched[0]]} match no layer the "
            f"model quantizes; its layers: {shown}{more} (globs over model.named_modules() "
            f"names, e.g. {example!r})"
        )
    return all(any(_matches(name, globs) for globs in groups.values()) for name in names)


def _matches(name: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)


# The most architectures besides the first that the pre-flight builds: each leaf's other
# values, one leaf at a time (a builder is called in milliseconds for the models a search
# trains; a zoo's largest take about a second).
MAX_VARIED_BUILDS = 16


def _check_varied(
    experiment: Experiment, shape: tuple[int, ...], n_classes: int, dtype: torch.dtype
) -> str | None:
    """Build the space's first architecture with one leaf changed at a time (each leaf's
    last value first, so every leaf's extreme is built within the cap): a value the builder
    rejects is an experiment's mistake, named by its leaf, instead of failing every trial
    that draws it. Combinations of values are left to the trials.

    Returns the float-weights note (``float_weights_note``) of the built model whose share
    of such weights is largest, if any has one: a leaf's other value may add a layer
    nascomp does not quantize (``kind: [gru, bag]``, the bag an ``nn.EmbeddingBag``)."""
    noted: tuple[float, str] | None = None
    for leaf, value, arch in _round_robin(experiment.space.arch.varied_archs())[:MAX_VARIED_BUILDS]:
        try:
            model = build_model(arch, shape, n_classes, dtype)
        except InfeasibleArchitecture:
            continue  # the user's documented way to skip a combination
        except (ValueError, TypeError) as exc:
            raise ConfigError(_located(f"space.arch.{leaf}: value {value!r}", exc)) from None
        note = float_weights_note(model, f"space.arch.{leaf}: {value!r}")
        if note is not None:
            share = sum(float_weights(model).values()) / sum(p.numel() for p in model.parameters())
            if noted is None or share > noted[0]:
                noted = (share, note)
    return noted[1] if noted is not None else None


def _round_robin(
    varied: list[tuple[str, Any, dict[str, Any]]],
) -> list[tuple[str, Any, dict[str, Any]]]:
    """Each leaf's last value, then each leaf's last but one, and so on."""
    by_leaf: dict[str, list[tuple[str, Any, dict[str, Any]]]] = {}
    for item in varied:
        by_leaf.setdefault(item[0], []).append(item)
    queues = [list(reversed(items)) for items in by_leaf.values()]
    ordered = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


# Below this many validation samples, val_accuracy moves in steps of more than 1%.
SMALL_VALIDATION = 100


def small_validation_note(n_val: int, val_fraction: float, official: bool = False) -> str | None:
    """One line when the validation split, which ranks every trial, is too small to tell
    close models apart. ``official``: it is a split of its own (an image folder's val/),
    which val_fraction does not draw."""
    if n_val >= SMALL_VALIDATION:
        return None
    step = 100.0 / max(1, n_val)
    where, fix = (
        ("the val/ folder", "bring more images to val/")
        if official
        # val_fraction stays below 0.5: near it, more data is the one way
        else (
            f"val_fraction {val_fraction:g}",
            "raise data.val_fraction, or bring more data"
            if val_fraction < 0.3
            else "bring more data; data.val_fraction stays below 0.5",
        )
    )
    return (
        f"data: the validation split holds {n_val} sample{'s' if n_val != 1 else ''} "
        f"({where}), so val_accuracy moves in steps of {step:.3g}% and close models rank by "
        f"chance ({fix})"
    )


def _absent_classes(labels: torch.Tensor, n_classes: int) -> list[int]:
    """The classes of ``0..n_classes-1`` no label of ``labels`` holds."""
    counts = torch.bincount(labels.detach().cpu().long(), minlength=n_classes)
    return [i for i in range(n_classes) if int(counts[i]) == 0]


def _named(missing: list[int], classes: tuple[str, ...]) -> str:
    """``class a, b`` (or ``label 0, 3``), at most five, for a note."""
    names = [classes[i] if classes else str(i) for i in missing]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{'class' if classes else 'label'} {shown}"


def untrained_classes_note(
    labels: torch.Tensor, n_classes: int, classes: tuple[str, ...] = ()
) -> str | None:
    """One line when a class has no sample in the training split: a model cannot learn it
    (labels 1..10 without a ``classes`` list make 11 classes, 0 never seen; a class of one
    image is held out for testing)."""
    missing = _absent_classes(labels, n_classes)
    if not missing:
        return None
    present = n_classes - len(missing)
    hint = (
        "; labels start at 1: give 0..K-1"
        if missing == [0] and not classes
        # K is the largest label + 1: labels 0, 5, 10 make 11 classes, 8 of them never seen
        else f"; labels that skip values are no classes: map the {present} that occur to "
        f"0..{present - 1}; else give each class more samples"
        if not classes
        else "; give each class more samples"
    )
    return (
        f"data: {len(missing)} of {n_classes} classes have no sample in the training split "
        f"({_named(missing, classes)}): no model can learn them{hint}"
    )


def unvalidated_classes_note(
    labels: torch.Tensor,
    trained: torch.Tensor,
    n_classes: int,
    classes: tuple[str, ...] = (),
    official: bool = False,
) -> str | None:
    """One line when a class has no sample in the validation split, which ranks the trials:
    val_accuracy and val_balanced_accuracy (a mean over the classes present) cannot see it,
    so a model that never answers it can score 1.0 there. A class missing from the training
    split too is said by ``untrained_classes_note`` alone."""
    if len(labels) == 0:
        return None
    untrained = set(_absent_classes(trained, n_classes))
    missing = [i for i in _absent_classes(labels, n_classes) if i not in untrained]
    if not missing:
        return None
    return (
        f"data: {len(missing)} of {n_classes} classes have no sample in the validation split "
        f"({_named(missing, classes)}): val_accuracy and val_balanced_accuracy, which rank "
        "the trials, cannot see them (a model that never answers them can score 1.0); "
        + (
            "give them images in the val/ folder"
            if official
            else "give them more samples or raise data.val_fraction"
        )
    )


# The share of a student's parameters outside the quantized layers that earns a note.
FLOAT_SHARE_NOTED = 0.05


def float_weights_note(model: nn.Module, field: str = "space.arch") -> str | None:
    """One line when at least :data:`FLOAT_SHARE_NOTED` of ``model``'s parameters are weights
    that no quantized layer holds (a bare parameter, a transposed convolution): they stay
    float, whatever bit-width a trial draws."""
    floats = float_weights(model)
    total = sum(p.numel() for p in model.parameters())
    held = sum(floats.values())
    if total == 0 or held < FLOAT_SHARE_NOTED * total:
        return None
    owners: dict[str, int] = {}
    for name, size in floats.items():
        prefix, _, leaf = name.rpartition(".")
        owner = model.get_submodule(prefix) if prefix else model
        label = f"{prefix or leaf} ({type(owner).__name__})"
        owners[label] = owners.get(label, 0) + size
    return (
        f"{field}: {held:,} of {total:,} parameters ({held / total:.0%}) are weights outside the "
        f"layers nascomp quantizes ({quantized_layer_names()}): {_largest(owners)}; they stay "
        "float32 at every bit-width, unstructured pruning leaves them whole, and they count at "
        "32 bits in size_bytes"
    )


def unpruned_weights_note(model: nn.Module, field: str = "space.prune") -> str | None:
    """One line when at least :data:`FLOAT_SHARE_NOTED` of ``model``'s parameters are weight
    matrices that unstructured pruning leaves whole although QAT quantizes them (a recurrent
    layer's, attention's input projection, an embedding table): a trial's ratio is of the
    convolution and Linear weights alone (a GRU model asked for 0.6 was 3% zeros)."""
    whole: dict[str, int] = {}
    for name, module in model.named_modules():
        if is_quantized_layer(module) and not is_weight_layer(module):
            size = sum(getattr(module, w).numel() for w in weight_names(module))
            whole[f"{name or 'model'} ({type(module).__name__})"] = size
    total = sum(p.numel() for p in model.parameters())
    held = sum(whole.values())
    if total == 0 or held < FLOAT_SHARE_NOTED * total:
        return None
    return (
        f"{field}: unstructured pruning zeroes convolution and Linear weights alone; {held:,} "
        f"of {total:,} parameters ({held / total:.0%}) are in layers it leaves whole: "
        f"{_largest(whole)} (quantized all the same); a trial's prune.ratio is of the rest"
    )


def _largest(sizes: Mapping[str, int], shown: int = 3) -> str:
    """The ``shown`` largest entries of ``sizes`` with their sizes, and how many more."""
    largest = sorted(sizes.items(), key=lambda item: -item[1])
    listed = "; ".join(f"{label} {size:,}" for label, size in largest[:shown])
    more = f"; and {len(largest) - shown} more" if len(largest) > shown else ""
    return listed + more


# The teacher of float inputs that are not images when the experiment names none: the default
# teacher (a residual CNN) needs (C, H, W) images. An MLP takes any shape, flattened.
FEATURE_TEACHER: dict[str, Any] = {"family": "mlp", "hidden": [256, 128]}


def _default_teacher_cannot_take(experiment: Experiment, shape: tuple[int, ...]) -> bool:
    return (
        "arch" not in experiment.teacher.model_fields_set
        and experiment.teacher.arch.get("family") in IMAGE_FAMILIES
        and len(shape) != 3
    )


def _default_space_cannot_take(experiment: Experiment, shape: tuple[int, ...]) -> bool:
    """The experiment left ``space.arch`` to its default (CNNs, which need (C, H, W) images)
    and the inputs are vectors of features."""
    return (
        "arch" not in experiment.space.model_fields_set
        and experiment.space.arch.family in IMAGE_FAMILIES
        and len(shape) == 1
    )


def _with_feature_space(experiment: Experiment) -> Experiment:
    space = experiment.space.model_copy(update={"arch": ARCH_SPACES["mlp"]()})
    return experiment.model_copy(update={"space": space})


def _with_feature_teacher(experiment: Experiment) -> tuple[Experiment, dict[str, Any]]:
    arch = dict(FEATURE_TEACHER)
    teacher = experiment.teacher.model_copy(update={"arch": arch})
    return experiment.model_copy(update={"teacher": teacher}), arch


def _check_input_rank(
    shape: tuple[int, ...],
    student: Mapping[str, Any],
    teacher: Mapping[str, Any] | None,
    augment: bool,
) -> None:
    """Inputs that are not (C, H, W) images (feature vectors, signals) need a family that
    takes them, the teacher's included (the default teacher is a cnn), and no image
    augmentation."""
    if len(shape) == 3:
        return
    if augment:
        raise ConfigError(
            f"train.augment: crops and flips (C, H, W) images; the data's inputs have shape "
            f"{tuple(shape)} (set train.augment.padding: 0 and flip: false)"
        )
    for field, arch in (("space.arch", student), ("teacher.arch", teacher)):
        if arch is not None and arch.get("family") in IMAGE_FAMILIES:
            use = (
                "family custom or mlp, or space.distill.enabled: [false]"
                if field == "teacher.arch"
                else "family mlp or custom"
            )
            raise ConfigError(
                f"{field}: model family {arch['family']!r} takes (C, H, W) images; the data's "
                f"inputs have shape {tuple(shape)} (use {use})"
            )


def _check_ids(
    shape: tuple[int, ...],
    student: Mapping[str, Any],
    teacher: Mapping[str, Any] | None,
    augment: bool,
) -> None:
    """Integer ids (tokens, categories) need a builder that embeds them, the teacher's
    included, and no image augmentation."""
    if augment:
        raise ConfigError(
            f"train.augment: crops and flips images; the data's inputs are integer ids of shape "
            f"{tuple(shape)} (set train.augment.padding: 0 and flip: false)"
        )
    for field, arch in (("space.arch", student), ("teacher.arch", teacher)):
        if arch is not None and arch.get("family") not in IDS_FAMILIES:
            use = "family custom, or space.distill.enabled: [false]"
            raise ConfigError(
                f"{field}: model family {arch.get('family')!r} takes float inputs; the data's "
                f"inputs are integer ids of shape {tuple(shape)} (use "
                f"{use if field == 'teacher.arch' else 'family custom'})"
            )


def _with_layer_groups(experiment: Experiment, layers: list[str]) -> Experiment:
    if not layers:
        raise ConfigError(
            "space.quant.groups: 'layers': the model has no layer nascomp quantizes "
            f"({QUANTIZED_LAYER_NAMES})"
        )
    others = any(
        param.possible_values() is None or len(param.possible_values() or ()) > 1
        for param in experiment.space.arch.params()
    )
    quant = experiment.space.quant.with_layer_groups(layers, others)
    space = experiment.space.model_copy(update={"quant": quant})
    return experiment.model_copy(update={"space": space})


def _check_checkpoint(model: torch.nn.Module, checkpoint: str) -> None:
    """The user's trained teacher weights must fit ``teacher.arch`` exactly."""
    try:
        state = load_teacher_checkpoint(checkpoint)
    except ValueError as exc:  # nascomp's own words, naming the file
        raise ConfigError(f"teacher.checkpoint: {exc}") from None
    try:
        model.load_state_dict(state)
    except Exception as exc:
        text = _state_mismatch(model.state_dict(), state)
        if not text:
            words = " ".join(str(exc).split())
            text = f"{type(exc).__name__}: " + (words[:300] + " ..." if len(words) > 300 else words)
        raise ConfigError(
            f"teacher.checkpoint: {checkpoint} does not load into teacher.arch: {text}"
        ) from None


def _state_mismatch(own: dict[str, Any], state: dict[str, Any]) -> str:
    """How a state dict differs from a model's, counted, with the first of each kind (torch's
    message lists every key, hundreds on a real model)."""
    shapes = [
        (key, list(state[key].shape), list(value.shape))
        for key, value in own.items()
        if key in state
        and hasattr(state[key], "shape")
        and tuple(state[key].shape) != tuple(value.shape)
    ]
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    parts = []
    if shapes:
        key, theirs, ours = shapes[0]
        parts.append(
            f"{len(shapes)} weight(s) of another shape (first: {key!r} is {theirs} in the "
            f"file, {ours} in the model)"
        )
    if missing:
        parts.append(f"{len(missing)} weight(s) the file lacks (first: {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} the model does not have (first: {unexpected[0]!r})")
    return "; ".join(parts)


# Below this share of the first architecture's weights loaded from train.init, a note says so.
INIT_SHARE_NOTED = 0.5


def _check_init(
    experiment: Experiment, model: torch.nn.Module, data: Any, notes: list[str] | None = None
) -> None:
    """``train.init`` must load and give some architecture of the space some of its weight
    matrices (a file of another model entirely would silently train from scratch), matched as
    ``train.init_match`` says; under half of the first architecture's weights loaded is
    noted. Where the first architecture takes none but another value of a leaf does (a c16
    file, ``base_channels: [32, 16]``), ``_init_misses`` names the values that miss."""
    path = str(experiment.train.init)
    try:
        state = initial_weights(path, experiment.train.init_sha256)
    except Exception as exc:
        line = (str(exc).strip().splitlines() or [""])[0][:300]
        if isinstance(exc, ValueError):  # nascomp's own words, naming the file
            line = line if line.startswith("train.init") else f"train.init: {line}"
        else:
            line = f"train.init: {path} does not load: {type(exc).__name__}: {line}"
        raise ConfigError(line) from None
    own = model.state_dict()
    broken = [  # of the tensors the model would load: a file's extra ones are ignored
        name
        for name, tensor in state.items()
        if name in own
        and isinstance(tensor, torch.Tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]
    if broken:  # every trial diverged from them, one after another
        raise ConfigError(
            f"train.init: {path} holds NaN or infinite values ({', '.join(broken[:3])}"
            f"{', ...' if len(broken) > 3 else ''}): every trial would diverge from them; give "
            "a checkpoint of finite weights"
        )
    match = experiment.train.init_match
    report = apply_weights(model, state, match)
    has_matrices = any(p.dim() >= 2 for p in model.parameters())
    if report.loaded == 0 or (has_matrices and report.matrices == 0):
        if _varied_models_taking(experiment, data, state)[0]:
            return  # other values of the space take it: a note, by _init_misses
        theirs = ", ".join(list(state)[:3]) or "none"
        ours = ", ".join([name for name, p in model.named_parameters() if p.dim() >= 2][:3])
        fits = f" (it fits {report.loaded} counters or biases only)" if report.loaded else ""
        fix = "" if match == "slice" else "; train.init_match: slice loads the part both hold"
        raise ConfigError(
            f"train.init: {path} has no weight of the name and shape of space.arch's model"
            f"{fits} (the file: {theirs}, ...; the model's weights: {ours}, ...){fix}"
        )
    if report.share < INIT_SHARE_NOTED and notes is not None:
        notes.append(
            f"train.init: {report.share:.0%} of space.arch's weights load from the file "
            f"({report.describe(path)}); the rest starts from its initialisation"
        )
        return
    parameters = {name for name, _ in model.named_parameters()}
    lacking = [name for name in report.missing if name in parameters]
    if lacking and notes is not None:  # a file cut short: its model trained from scratch there
        notes.append(
            f"train.init: {path} lacks {len(lacking)} of space.arch's parameters "
            f"({', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''}): they start from "
            "their initialisation"
        )


def _varied_models_taking(
    experiment: Experiment, data: Any, state: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """The ``leaf value`` of the space's first architecture with one leaf changed (as the
    pre-flight builds them) whose models take some of ``state``'s weight matrices, and of
    those that take none."""
    match = experiment.train.init_match
    taking: list[str] = []
    missing: list[str] = []
    for leaf, value, arch in _round_robin(experiment.space.arch.varied_archs())[:MAX_VARIED_BUILDS]:
        try:
            model = build_model(arch, data.input_shape, data.n_classes, data.input_dtype)
        except (InfeasibleArchitecture, ValueError, TypeError):
            continue  # declined, or refused by the checks above
        if not any(p.dim() >= 2 for p in model.parameters()):
            continue
        takes = apply_weights(model, state, match).matrices > 0
        (taking if takes else missing).append(f"{leaf} {value!r}")
    return taking, missing


def _init_misses(experiment: Experiment, data: Any) -> str | None:
    """A note naming the values of the space's leaves whose models take none of
    ``train.init``'s weight matrices, the first architecture's included: a c8 model and a c16
    file have no weight of one shape, so those trials train from scratch although their label
    says "from init.pt" (only BatchNorm's counters and a bias fit)."""
    path = str(experiment.train.init)
    try:
        state = initial_weights(path, experiment.train.init_sha256)
    except Exception:  # a file that does not load is _check_init's to name
        return None
    match = experiment.train.init_match
    taking, missed = _varied_models_taking(experiment, data, state)
    arch = experiment.space.arch
    try:
        first = build_model(arch.first_arch(), data.input_shape, data.n_classes, data.input_dtype)
    except (InfeasibleArchitecture, ValueError, TypeError):
        first = None
    if (
        first is not None
        and any(p.dim() >= 2 for p in first.parameters())
        and not apply_weights(first, state, match).matrices
    ):  # _check_init let it through: other values of the space take the file
        first_values = arch.first_values()
        missed = [f"{leaf} {first_values[leaf]!r}" for leaf in _leaves_of(taking)] + missed
    if not missed:
        return None
    fix = "" if match == "slice" else "; train.init_match: slice loads the part both shapes hold"
    return (
        f"train.init: the models of space.arch.{', '.join(missed[:4])} take none of {path}'s "
        f"weight matrices (their shapes differ): those trials train from scratch{fix}"
    )


def _leaves_of(values: list[str]) -> list[str]:
    """The leaves of ``leaf value`` strings, each once, in order."""
    return list(dict.fromkeys(item.split(" ", 1)[0] for item in values))


def _layout_hint(experiment: Experiment, shape: tuple[int, ...], exc: BaseException) -> str:
    """For a builder that failed on a user's data read as one-channel images: 2-D samples are
    read as (H, W) images unless ``data.layout`` says they are (C, L) signals. Not for a model
    that ran and returned something other than a tensor: the layout is not why."""
    data = experiment.data
    if data.name != "custom" or data.layout != "auto" or len(shape) != 3 or shape[0] != 1:
        return ""
    if isinstance(exc, NotLogitsError):
        return ""
    return (
        f" (the samples are read as (H, W) images, input_shape={shape}: if they are (C, L) "
        "signals, set data.layout: channels_first)"
    )


def _located(field: str, exc: BaseException) -> str:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return message if message.startswith(field) else f"{field}: {message}"
