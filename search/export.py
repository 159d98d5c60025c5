"""Write a reproduced model to a folder, and load it back from that folder alone.

Files:

- ``model.nascomp``: the compressed artifact (``compressors.export.save_compressed``), whose
  size is the trial's ``size_bytes``;
- ``skeleton.json``: what rebuilds the (possibly structurally pruned) architecture the artifact
  fills: the ``arch`` mapping, input shape, number of classes and every layer's channel counts;
- ``model.onnx``: the file to ship: what the trial's latency was timed on (int8 QDQ for 8-bit
  trials), for ONNX Runtime, OpenVINO or TensorRT;
- ``model.fp16.onnx`` (with ``fp16=True``, ``reproduce --export DIR --fp16``): the evaluated
  model with fp16 weights and computation, float32 input and logits (the same feed and output
  as ``model.onnx``), for GPU runtimes;
- ``model.torchscript.pt``: the model as evaluated (activation rounding too), for PyTorch
  runtimes; ``state_dict.pt``: its weights as evaluated (rounded to their widths), keyed as
  the plain model's (quantization-aware layers folded), for the user's own model class;
- ``trial_config.json``: the trial's flat config (its MLflow params);
- ``preprocess.json``: what the model must be fed: raw inputs divided by ``scale``, minus
  ``mean`` and divided by ``std`` per channel (axis 1 of a batch: an image's colour channel, a
  feature vector's every feature), after converting images to ``image_mode`` (RGB or L) and
  resizing them to ``image_size`` when set, and what it returns (logits); the same recipe is
  in ``model.onnx``'s metadata (``nascomp.preprocess``);
- ``export.json`` (written by ``nascomp reproduce``): where the model came from (its trial's
  and reproduction's MLflow runs, its metrics) and each file's size, SHA-256 and form.

The files are written into a staging folder inside ``out_dir`` and moved into place once all
are written, so an export that fails leaves the folder as it was, not mixing two models.

``load_exported(folder)`` returns a model that predicts exactly what the trial evaluated.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nascomp.compressors.export import (
    layer_shapes,
    load_compressed,
    reshape_layers,
    save_compressed,
)
from nascomp.compressors.layers import LEGACY as LEGACY_LAYERS
from nascomp.compressors.layers import layer_kinds
from nascomp.compressors.quantization import freeze_fake_quant
from nascomp.compressors.shapes import free_tensor_shapes, reshape_free_tensors
from nascomp.search.about import version
from nascomp.search.interrupts import signals_held
from nascomp.spaces.models import build_model
from nascomp.spaces.space import arch_from_flat
from nascomp.trainers.checkpoint import cpu_state_dict
from nascomp.trainers.imagefolder import DECODE
from nascomp.trainers.normalise import Normalise

ARTIFACT = "model.nascomp"
SKELETON = "skeleton.json"
FP16_ONNX = "model.fp16.onnx"
PREPROCESS = "preprocess.json"
PREPROCESS_KEY = "nascomp.preprocess"  # model.onnx's metadata entry of the same recipe
EXPORT_INFO = "export.json"
RUN_KEY = "nascomp.trial_run_id"  # model.onnx's metadata entry: the trial it is the model of
# Data whose inputs are images decoded by PIL (or sklearn's 8x8 grey digits).
_IMAGE_DATA = ("digits", "mnist", "fashion_mnist", "imagefolder", "torchvision")


def write_artifact(
    model: nn.Module,
    example: torch.Tensor,
    config: dict[str, Any],
    out_dir: Path,
    recipe: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """``model.nascomp`` and ``skeleton.json``: all ``load_exported`` needs (and what a trial
    run holds as artifacts in MLflow), and with ``recipe`` (``preprocess_recipe``: how the
    model's inputs were made) ``preprocess.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    files = {"artifact": out_dir / ARTIFACT, "skeleton": out_dir / SKELETON}
    if recipe is not None:
        files["preprocess"] = out_dir / PREPROCESS
        files["preprocess"].write_text(json.dumps(recipe, indent=2))
    kinds = config.get("quant.layers", LEGACY_LAYERS)  # the layers the trial compressed
    with layer_kinds(kinds):
        # The trial's size_bytes is this file's size: the same coding.
        save_compressed(model, files["artifact"], coding=config.get("measure.coding", "packed"))
        shapes = layer_shapes(model)
    with torch.no_grad():
        n_classes = int(model(example).shape[-1])
    skeleton = {
        "arch": arch_from_flat(config),
        "layers_compressed": kinds,  # absent in older exports: Conv2d and Linear alone
        "input_shape": list(example.shape[1:]),
        # integer ids (an embedding's input) or float32; absent in older exports: float32
        "input_dtype": "float32" if example.is_floating_point() else "int64",
        "n_classes": n_classes,
        "layers": shapes,
        "tensors": free_tensor_shapes(model),  # e.g. a pruned position embedding's
    }
    files["skeleton"].write_text(json.dumps(skeleton, indent=2, default=str))
    return files


def export_model(
    model: nn.Module,
    example: torch.Tensor,
    config: dict[str, Any],
    out_dir: Path,
    onnx: bytes | None = None,
    fp16: bool = False,
    normalise: Normalise | None = None,
    classes: Sequence[str] = (),
    features: Sequence[str] = (),
    categories: Mapping[str, Sequence[str]] | None = None,
    provenance: Mapping[str, Any] | None = None,
    fp16_form: bytes | None = None,
    recipe: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Export ``model`` (in eval mode) next to its flat trial config, ``onnx`` (the file the
    trial measured) as ``model.onnx`` and, with ``fp16``, ``model.fp16.onnx`` (``fp16_form``
    where the caller made it already: ``compressors.onnx_export.fp16_onnx``), and how its
    inputs were normalised (``normalise``), which column each input feature is (``features``,
    and the values of one-hot encoded columns of words, ``categories``) and what its outputs
    mean (``classes``, each label's name) as ``preprocess.json`` (``recipe`` instead where
    given: the one the trial logged); with ``provenance`` (where the model came from: run
    ids, metrics), ``export.json``. Return the files written.

    A file of an earlier export into ``out_dir`` that this one does not write (model.fp16.onnx
    without ``fp16``) is removed; a file of an export's name that no earlier export wrote is
    the user's own: one this export would replace is refused (``check_export_folder``), any
    other is left (``foreign_files`` names it)."""
    # `a/../b` as b, as the checks read it (the OS reads no `..` past a folder that is not
    # there, and mkdir made a stray `a`)
    out_dir = Path(os.path.normpath(out_dir))
    check_export_folder(out_dir, "out_dir", fp16=fp16)
    with _folder_made_for(out_dir):
        earlier = earlier_export_files(out_dir)
        staging = Path(tempfile.mkdtemp(prefix=".nascomp-export-", dir=out_dir))
        try:
            run_id = (provenance or {}).get("trial_run_id")
            staged = _write_export(
                model,
                example,
                config,
                staging,
                onnx,
                fp16,
                normalise,
                classes,
                features,
                categories,
                run_id,
                fp16_form,
                recipe,
            )
            if provenance is not None:
                info = {**provenance, "files": _file_facts(staged.values())}
                staged["info"] = staging / EXPORT_INFO
                staged["info"].write_text(json.dumps(info, indent=2, default=str))
            # The moves, and the earlier export's files removed, as one step: a Ctrl-C or
            # SIGTERM between two moves left one model's files beside another's (and its
            # export.json then called them the user's).
            with signals_held():
                files = {}
                for kind, path in staged.items():
                    files[kind] = out_dir / path.name
                    os.replace(path, files[kind])
                for name in earlier:
                    if out_dir / name not in files.values():
                        (out_dir / name).unlink(missing_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return files


@contextlib.contextmanager
def _folder_made_for(out_dir: Path) -> Iterator[None]:
    """``out_dir``, made where it is missing, and removed again where the block fails and
    leaves it empty (a failed export into a new folder left an empty one)."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _warn_if_code_changed(folder: Path) -> None:
    """A warning when the user's code that builds the model (its module and the user's
    modules it imports) is not what it was at the export (``export.json``'s ``code_files``):
    the old weights then went into the new code, and the model agreed with the folder's
    model.onnx on half the inputs, unsaid. Exports without the record are not checked."""
    from nascomp.trainers.listing import code_files_digest

    try:
        recorded = json.loads((folder / EXPORT_INFO).read_text()).get("code_files")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(recorded, dict) or not recorded:
        return
    now = code_files_digest([str(path) for path in recorded])
    changed = [path for path, digest in recorded.items() if now.get(path) != digest]
    if changed:
        warnings.warn(
            f"{folder}: {', '.join(changed)} changed since this export (its source or a module "
            "of yours it imports, or it is not found from here): the model built may not be "
            "the exported one (compare it with model.onnx)",
            stacklevel=3,
        )


def earlier_export_files(out_dir: Path) -> set[str]:
    """The names of the files an earlier export wrote into ``out_dir``: those its
    ``export.json`` lists; for an export made before ``export.json`` (or without provenance),
    every export-named file beside a ``model.nascomp`` and a ``skeleton.json`` that is one.
    A folder holding a ``skeleton.json`` of the user's own is no export, nor one whose
    ``export.json`` is not nascomp's (a packaging tool's manifest with a ``files`` mapping)."""
    try:
        info = json.loads((out_dir / EXPORT_INFO).read_text())
    except (OSError, ValueError):
        info = None
    ours = isinstance(info, dict) and {"nascomp", "trial_run_id"} <= set(info)
    if ours and isinstance(info.get("files"), dict):
        # a listed file changed since (the user's edit, or theirs in its place) is theirs
        return {
            name
            for name, facts in info["files"].items()
            if name in EXPORT_FILES and _as_written(out_dir / name, facts)
        } | {EXPORT_INFO}
    try:
        skeleton = json.loads((out_dir / SKELETON).read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(skeleton, dict) or not {"arch", "layers", "n_classes"} <= set(skeleton):
        return set()
    if not (out_dir / ARTIFACT).is_file():
        return set()
    return {name for name in EXPORT_FILES if (out_dir / name).is_file()}


def _as_written(path: Path, facts: Any) -> bool:
    """Whether ``path`` holds what export.json says the export wrote there (or is gone)."""
    if not path.is_file():
        return True
    if not isinstance(facts, dict) or "sha256" not in facts:
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == facts["sha256"]


def check_export_folder(out_dir: Path, field: str, fp16: bool = False) -> None:
    """A ValueError naming ``field`` when an entry of ``out_dir`` that an export replaces is
    not a file (a folder named model.onnx), or is a file no earlier export wrote (the user's
    own model.onnx, which the export would overwrite): found before the model trains."""
    earlier: set[str] | None = None
    for name in EXPORT_FILES:
        path = out_dir / name
        if path.exists() and not path.is_file():
            raise ValueError(
                f"{field}: {path} is in the way of the export's {name} and is not a file; "
                "move it or give another folder"
            )
        if (name == FP16_ONNX and not fp16) or not path.is_file():
            continue  # a file the export does not write stays (foreign_files)
        earlier = earlier_export_files(out_dir) if earlier is None else earlier
        if name not in earlier:
            listed = EXPORT_INFO in earlier  # an export's folder: the file was changed since
            why = (
                "it changed since the export that wrote it (its SHA-256 is not export.json's)"
                if listed and name in _listed_files(out_dir)
                else "no earlier export wrote it (none is in the folder, or its export.json does "
                "not list it)"
            )
            raise ValueError(
                f"{field}: {path} is not an earlier nascomp export's file as it was: {why}, and "
                "the export would replace it; move it or give another folder"
            )


def _listed_files(out_dir: Path) -> set[str]:
    """The names ``export.json`` lists (whatever they hold now)."""
    try:
        info = json.loads((out_dir / EXPORT_INFO).read_text())
    except (OSError, ValueError):
        return set()
    files = info.get("files") if isinstance(info, dict) else None
    return set(files) if isinstance(files, dict) else set()


def foreign_files(out_dir: Path, files: Mapping[str, Path]) -> list[Path]:
    """The files of ``out_dir`` named as an export's that this export did not write: the
    user's own, kept where the folder held no earlier export."""
    written = set(files.values())
    return [
        out_dir / n for n in EXPORT_FILES if (out_dir / n).is_file() and out_dir / n not in written
    ]


def _file_facts(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Each file's size and SHA-256, by name (``export.json``)."""
    return {
        path.name: {
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        for path in sorted(paths)
    }


def _write_export(
    model: nn.Module,
    example: torch.Tensor,
    config: dict[str, Any],
    out_dir: Path,
    onnx: bytes | None,
    fp16: bool,
    normalise: Normalise | None,
    classes: Sequence[str],
    features: Sequence[str],
    categories: Mapping[str, Sequence[str]] | None,
    run_id: str | None,
    fp16_form: bytes | None = None,
    recipe: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Every file of ``export_model`` but ``export.json``, written into ``out_dir``; the ONNX
    files name ``run_id``, the trial's run, in their metadata. ``recipe`` (the one the trial
    logged) is ``preprocess.json``; without it, the one ``normalise`` and the rest make."""
    if recipe is None and normalise is not None:
        recipe = preprocess_recipe(normalise, example, config, classes, features, categories)
    files = write_artifact(model, example, config, out_dir, recipe)
    if onnx is not None:
        files["onnx"] = out_dir / "model.onnx"
        files["onnx"].write_bytes(with_metadata(onnx, recipe, run_id))
    if fp16:
        from nascomp.compressors.onnx_export import fp16_onnx

        if fp16_form is None:
            fp16_form = fp16_onnx(model, example.cpu())
        files["onnx_fp16"] = out_dir / FP16_ONNX
        files["onnx_fp16"].write_bytes(with_metadata(fp16_form, recipe, run_id))
    files["state_dict"] = out_dir / "state_dict.pt"
    files["torchscript"] = out_dir / "model.torchscript.pt"
    files["config"] = out_dir / "trial_config.json"
    # The weights as they were evaluated, keyed as the plain model's: the QAT layers keep
    # their float latent weights (rounded in each forward pass), which a user loading this
    # into their own model class would have run unrounded (17 levels in a 4-bit row).
    torch.save(cpu_state_dict(freeze_fake_quant(copy.deepcopy(model))), files["state_dict"])
    with warnings.catch_warnings(), torch.no_grad():
        # TorchScript is deprecated in favour of torch.export, but it is still what most mobile
        # and C++ runtimes load; the trace is checked against eager outputs by the tests.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(files["torchscript"]))
    files["config"].write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    return files


# Every file an export may write; the user's own files in the folder are left alone.
EXPORT_FILES = (
    ARTIFACT,
    SKELETON,
    PREPROCESS,
    "model.onnx",
    FP16_ONNX,
    "state_dict.pt",
    "model.torchscript.pt",
    "trial_config.json",
    EXPORT_INFO,
)


def preprocess_recipe(
    normalise: Normalise,
    example: torch.Tensor,
    config: dict[str, Any],
    classes: Sequence[str] = (),
    features: Sequence[str] = (),
    categories: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """What turns a raw input into what the model was trained on, and what its outputs
    mean, as plain data."""
    two_d = (
        "2-D inputs are (C, L) channels, as given"
        if config.get("data.layout", "auto") == "channels_first"
        else "(H, W) images get a channel axis of 1"
    )
    resize = (
        "PIL's Image.resize(BILINEAR) on the 8-bit image"
        if config.get("data.name") == "imagefolder"
        else "torch's interpolate(mode='bilinear', antialias=True) on float values"
    )
    formula = (
        "x = raw as int64: integer ids (token, category or item indices) as the dataset gave "
        "them, a (batch, *input_shape) array, not normalised"
        if normalise.ids
        else "x = (raw / scale - mean[c]) / std[c], float32, c the index along channel_axis of a "
        f"(batch, *input_shape) array; {two_d} and, with image_size, images are resized to "
        f"image_size x image_size first, with {resize}"
    )
    image_size = config.get("data.image_size")
    return {
        "input_shape": list(example.shape[1:]),
        "image_mode": image_mode(config.get("data.name"), tuple(example.shape[1:])),
        # How an image file becomes the image_mode array (EXIF orientation, 16-bit scans)
        "decode": DECODE if config.get("data.name") == "imagefolder" else None,
        "image_size": image_size,
        "resize": resize if image_size is not None else None,
        **normalise.describe(),
        "formula": formula,
        # Rows of features: input column i is the dataset's column features[i]; a CSV's
        # column c of words is one input per value in categories[c], named "c=value", 1 where
        # the row holds that value and 0 elsewhere, before the formula above.
        "features": list(features) or None,
        "categories": {c: list(values) for c, values in (categories or {}).items()} or None,
        # The output is (batch, n_classes) logits; column i is the class named classes[i].
        "output": "logits: (batch, n_classes) scores before softmax; argmax is the class",
        "classes": list(classes) or None,
    }


def data_recipe(data: Any, example: torch.Tensor, config: dict[str, Any]) -> dict[str, Any] | None:
    """``preprocess_recipe`` of a trial's loaded data (``DataSplits`` or ``StreamedSplits``),
    as JSON reads it back (lists, not tuples); None where the data does not say how its
    inputs were normalised."""
    if data.normalise is None:
        return None
    recipe = preprocess_recipe(
        data.normalise, example, config, data.classes, data.feature_names, data.categories
    )
    return json.loads(json.dumps(recipe))


def image_mode(data_name: str | None, input_shape: tuple[int, ...]) -> str | None:
    """How images are decoded before the formula: PIL's mode ``RGB`` (channels in R, G, B
    order; the image folder's grey images repeated to 3 channels where any image has colour)
    or ``L`` (one grey channel); None for inputs that are not decoded images (a custom
    dataset's tensors, rows of features, token ids)."""
    if data_name not in _IMAGE_DATA or len(input_shape) != 3:
        return None
    return {1: "L", 3: "RGB"}.get(input_shape[0])


def with_metadata(onnx: bytes, recipe: dict[str, Any] | None, run_id: str | None = None) -> bytes:
    """``onnx`` with ``recipe`` (``nascomp.preprocess``) and the trial's ``run_id``
    (``nascomp.trial_run_id``, and the model's doc string) in its metadata, replacing entries
    of those keys; the graph itself is unchanged."""
    entries = {}
    if recipe is not None:
        entries[PREPROCESS_KEY] = json.dumps(recipe)
    if run_id is not None:
        entries[RUN_KEY] = run_id
    if not entries:
        return onnx
    import onnx as onnx_lib

    proto = onnx_lib.load_from_string(onnx)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    if run_id is not None:
        proto.doc_string = f"exported by nascomp {version()} from trial run {run_id}"
    return proto.SerializeToString()


def load_exported(folder: str | Path, trust_code: bool = False) -> nn.Module:
    """The model of an export folder, rebuilt from ``skeleton.json`` and filled from
    ``model.nascomp``, in eval mode on the CPU.

    The files are data, but a model of the ``custom`` family is rebuilt by the builder
    ``skeleton.json`` names: a module imported and a function called. That runs only with
    ``trust_code=True``, for a folder whose ``skeleton.json`` you trust (one you exported):
    anyone who could write the folder could name any function there."""
    if not isinstance(folder, str | os.PathLike):
        raise TypeError(f"folder: an export folder (a str or Path); got {type(folder).__name__}")
    if not isinstance(trust_code, bool):  # "false", read from a setting, is truthy
        raise TypeError(f"trust_code: True or False; got {trust_code!r}")
    folder = Path(folder)
    if not (folder / SKELETON).is_file() or not (folder / ARTIFACT).is_file():
        raise FileNotFoundError(
            f"no nascomp export in {folder}: it needs {SKELETON} and {ARTIFACT}, which "
            "`nascomp reproduce RUN_ID --export DIR` writes"
        )
    try:
        skeleton = json.loads((folder / SKELETON).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{folder / SKELETON} is not a nascomp skeleton ({exc})") from None
    arch = skeleton.get("arch") if isinstance(skeleton, dict) else None
    if not isinstance(arch, dict):
        raise ValueError(f"{folder / SKELETON} is not a nascomp skeleton (no arch mapping)")
    missing = [key for key in ("input_shape", "n_classes", "layers") if key not in skeleton]
    if missing:
        raise ValueError(f"{folder / SKELETON} is not a nascomp skeleton (no {missing[0]})")
    if arch.get("family") == "custom" and not trust_code:
        raise PermissionError(
            f"{folder / SKELETON} names code to import and run, builder "
            f"{arch.get('builder')!r}: load_exported runs it with trust_code=True alone; "
            "pass it for an export you made or trust"
        )
    if arch.get("family") == "custom":
        _warn_if_code_changed(folder)
    dtype = torch.int64 if skeleton.get("input_dtype") == "int64" else torch.float32
    # Building draws initial weights, which the file then replaces: not from the caller's
    # generator (a notebook's seeded results moved after loading a model).
    with torch.random.fork_rng(devices=[]):
        model = build_model(
            skeleton["arch"], tuple(skeleton["input_shape"]), skeleton["n_classes"], dtype
        )
    reshape_layers(model, skeleton["layers"])
    reshape_free_tensors(model, skeleton.get("tensors", {}))
    with layer_kinds(skeleton.get("layers_compressed", LEGACY_LAYERS)):
        try:
            return load_compressed(folder / ARTIFACT, model).eval()
        except ValueError as exc:  # "compressed file is truncated": which file
            if str(folder / ARTIFACT) in str(exc):
                raise
            raise ValueError(f"{folder / ARTIFACT}: {exc}") from None
