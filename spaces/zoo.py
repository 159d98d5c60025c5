"""Models the user brings: a builder of their own, and torchvision's or timm's by name.

Three families, each searched like the built-in ones:

- ``custom``: ``builder: "package.module:function"``, called as
  ``function(input_shape=(C, H, W), n_classes=K, **sampled)`` (``input_shape`` is one
  sample's shape: (F,) for vectors of features); it returns an ``nn.Module`` and
  may raise ``nascomp.InfeasibleArchitecture`` (or any exception class of that name, so the
  module need not import nascomp) for a combination that cannot work: the trial is then counted
  infeasible, never a crash.
- ``torchvision``: ``model:`` any classification model of ``torchvision.models`` (untrained:
  nothing is downloaded), built with ``num_classes=K``.
- ``timm``: ``model:`` any ``timm`` model, built with ``num_classes=K, in_chans=C`` (the
  optional extra ``pip install 'nascomp[timm]'``).

Every other key of the ``arch`` section is a keyword argument of the builder, and a leaf of the
space like any other: a value (fixed), a list (a choice) or ``{low, high}`` (a range), so the
user's own knobs are searched jointly with pruning, bit-width and distillation. ``model`` and
``builder`` are leaves too: a list searches over several models.

The zoo's models are made for 224x224 RGB images. :func:`adapt_stem` makes them work on the
data: the first convolution takes the data's channels, and for inputs under
:data:`SMALL_INPUT` pixels a side (MNIST's 28, CIFAR's 32) the stem keeps the resolution (stride
1, a kernel of at most 3x3, no max-pool after it), as CIFAR ResNets do; otherwise a 32x32 image
is a 1x1 map after the stem's first stages.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
import textwrap
from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import ConfigDict, create_model, model_validator
from torch import nn

from nascomp.spaces.models import InfeasibleArchitecture, call_builder, register_model
from nascomp.spaces.outputs import check_output, named_parameters
from nascomp.spaces.params import ArchSpaceBase, Param, parse_spec, to_param
from nascomp.spaces.userfn import UserCodeError, load_callable

SMALL_INPUT = 64  # below this many pixels a side, the zoo's stem keeps the resolution
# Keyword arguments nascomp sets itself: the data decides them, or they would download weights.
_RESERVED = {
    "family",
    "input_shape",
    "n_classes",
    "num_classes",
    "in_chans",
    "weights",
    "pretrained",
}


# ---------------------------------------------------------------------------- the space


def _leaf_kind(key: str, raw: Any) -> type:
    """The value type of a builder argument's spec, from the values the user wrote."""
    if isinstance(raw, dict):
        ends = [raw.get("low"), raw.get("high")]
        if any(isinstance(v, bool | str) for v in ends):
            raise ValueError(
                f"{key}: a range takes numbers; got {raw!r} (a choice of true and false, or of "
                "words, is a list: [false, true])"
            )
        integers = all(isinstance(v, int) and not isinstance(v, bool) for v in ends)
        return int if integers else float
    values = raw if isinstance(raw, list) else [raw]
    kinds = {type(value) for value in values}
    if kinds <= {bool}:
        return bool
    if kinds <= {str}:
        return str
    if kinds <= {int}:
        return int
    if kinds <= {int, float}:
        return float
    raise ValueError(
        f"{key}: give a number, a string or true/false, a list of one of those kinds, or a range "
        f"{{low, high}}; got {raw!r} (null, or no key, leaves the builder's default)"
    )


class ExternalArchSpace(ArchSpaceBase):
    """A family whose keyword arguments are the user's: any key besides the declared ones is a
    builder argument, and a spec (value, list or range) of the kind its values have."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    @model_validator(mode="after")
    def _arguments_are_specs(self) -> ExternalArchSpace:
        extra = self.__pydantic_extra__ or {}
        for key, raw in list(extra.items()):
            if raw is None:  # null: the builder's default, as if omitted (--set k=null drops k)
                del extra[key]
                continue
            if not key.isidentifier() or key in _RESERVED:
                reserved = ", ".join(sorted(_RESERVED))
                raise ValueError(
                    f"{key!r} cannot be a builder argument: arguments are Python identifiers "
                    f"other than {reserved} (nascomp sets those from the data)"
                )
            try:
                extra[key] = parse_spec(raw, kind=_leaf_kind(key, raw))
            except ValueError as exc:
                message = str(exc)
                raise ValueError(
                    message if message.startswith(f"{key}:") else f"{key}: {message}"
                ) from None
        return self

    def arguments(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})

    def params(self) -> list[Param]:
        declared = [
            to_param(f"arch.{name}", getattr(self, name)) for name in type(self).model_fields
        ]
        extra = [to_param(f"arch.{key}", spec) for key, spec in self.arguments().items()]
        return [*declared, *extra]


_PLUGIN_SPACES: dict[str, type[ExternalArchSpace]] = {}


def plugin_space(name: str) -> type[ExternalArchSpace]:
    """The ``space.arch`` section of plugin family ``name`` registered without one: every key
    besides ``family`` is a searched argument of its builder, as ``custom``'s are."""
    if name not in _PLUGIN_SPACES:
        title = "".join(part.title() for part in re.split(r"\W+", name)) or "Plugin"
        _PLUGIN_SPACES[name] = create_model(
            f"{title}ArchSpace",
            __base__=ExternalArchSpace,
            family=(Literal[name], name),  # type: ignore[valid-type]
        )
    return _PLUGIN_SPACES[name]


def _describe(head_key: str) -> Any:
    def describe(arch: Mapping[str, Any]) -> str:
        arguments = " ".join(
            f"{key}={_short(value)}"
            for key, value in arch.items()
            if key not in ("family", head_key)
        )
        head = str(arch.get(head_key, "?")).rpartition(":")[2]
        return f"{arch.get('family')} {head} {arguments}".strip()

    return describe


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------- stems and checks


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def adapt_stem(model: nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """Make a zoo model take ``input_shape`` (C, H, W): see the module's docstring. Returns
    what was changed, in words (logged with the model's description).

    A stem that keeps the resolution suits convolutional stems; a patch embedding (a vision
    transformer's: its token count fixes its position embeddings) then no longer fits the
    model. So the small-input stem is kept only when the model runs with it; otherwise the
    stem keeps its kernel and stride (only its input channels change), and the user's
    arguments (e.g. timm's ``img_size``, ``patch_size``) size the model for the input."""
    named = list(model.named_modules())
    convs = [(name, m) for name, m in named if isinstance(m, nn.Conv2d)]
    if not convs:
        return []
    small = min(input_shape[1:]) < SMALL_INPUT
    if small:
        replaced = {name: module for name, module in named}
        changes = _adapt(model, input_shape, convs, named, keep_resolution=True)
        if _runs(model, input_shape):
            return changes
        pools = [name for name, module in named if isinstance(module, nn.MaxPool2d)]
        for name in [convs[0][0], *pools]:
            _replace(model, name, replaced[name])  # undo, then channels only
        kept = _adapt(model, input_shape, convs, named, keep_resolution=False)
        return [*kept, "stem kept (the model does not run with a stride-1 stem)"]
    return _adapt(model, input_shape, convs, named, keep_resolution=False)


def _runs(model: nn.Module, input_shape: tuple[int, int, int]) -> bool:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_shape))
        return True
    except Exception:  # any failure: the other stem is tried, then check_output reports
        return False
    finally:
        model.train(was_training)


def _adapt(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    convs: list[tuple[str, nn.Conv2d]],
    named: list[tuple[str, nn.Module]],
    keep_resolution: bool,
) -> list[str]:
    channels = input_shape[0]
    stem_name, stem = convs[0]
    changes: list[str] = []
    kernel = stem.kernel_size
    stride = stem.stride
    if keep_resolution:
        kernel = tuple(min(k, 3) for k in stem.kernel_size)
        stride = (1, 1)
    # a patch embedding keeps its own padding (none); a string such as "same" cannot stride
    keep_padding = not keep_resolution and isinstance(stem.padding, tuple)
    padding = stem.padding if keep_padding else tuple(k // 2 for k in kernel)
    if stem.in_channels != channels or kernel != stem.kernel_size or stride != stem.stride:
        if stem.groups != 1:
            raise InfeasibleArchitecture(f"the stem convolution {stem_name!r} is grouped")
        new = nn.Conv2d(
            channels,
            stem.out_channels,
            kernel,  # type: ignore[arg-type]
            stride,  # type: ignore[arg-type]
            padding=padding,  # type: ignore[arg-type]
            dilation=stem.dilation,  # type: ignore[arg-type]
            bias=stem.bias is not None,
        )
        _replace(model, stem_name, new)
        changes.append(
            f"{stem_name}: {stem.in_channels}->{channels} channels, kernel "
            f"{stem.kernel_size[0]}->{kernel[0]}, stride {stem.stride[0]}->{stride[0]}"
        )
    if keep_resolution:
        second = convs[1][0] if len(convs) > 1 else None
        for name, module in named:
            if name == second:
                break
            if isinstance(module, nn.MaxPool2d):
                _replace(model, name, nn.Identity())
                changes.append(f"{name}: max-pool removed")
                break
    return changes


def _callee(node: ast.expr, scope: Mapping[str, Any]) -> Any:
    """The function or class a call in a builder's source names (``f(...)``, ``mod.f(...)``),
    looked up in the builder's module, or None."""
    if isinstance(node, ast.Name):
        return scope.get(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return getattr(scope.get(node.value.id), node.attr, None)
    return None


def _forwarded(function: Any, depth: int = 3) -> tuple[set[str], set[str]]:
    """The named parameters of the functions that ``function`` hands its ``**kwargs`` to, and
    those it fills itself in those calls, followed ``depth`` calls deep through its source.
    torchvision's ``mobilenet_v3_small(**kwargs)`` passes ``width_mult``, ``reduced_tail`` and
    ``dilated`` on to ``_mobilenet_v3_conf``, neither the builder's nor the model class's own
    parameter; it fills ``MobileNetV3``'s ``inverted_residual_setting`` itself. A function
    whose source cannot be read forwards nothing that can be named."""
    target = function.__init__ if inspect.isclass(function) else function
    try:
        parameters = inspect.signature(target).parameters.values()
        tree = ast.parse(textwrap.dedent(inspect.getsource(target)))
    except (OSError, TypeError, ValueError, SyntaxError):
        return set(), set()
    rest = [p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    scope = getattr(inspect.unwrap(target), "__globals__", {})
    forwarded: set[str] = set()
    filled: set[str] = set()
    if not rest or depth <= 0:
        return forwarded, filled
    for node in ast.walk(tree):
        key = _read_key(node, rest[0])
        if key is not None:  # kwargs.pop("dropout", 0.2): efficientnet_b0 reads it itself
            forwarded.add(key)
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call) or not any(
            k.arg is None and isinstance(k.value, ast.Name) and k.value.id == rest[0]
            for k in call.keywords
        ):
            continue
        callee = _callee(call.func, scope)
        if callee is None or not callable(callee):
            continue
        named = [
            p.name
            for p in _signature_parameters(callee)
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
        given = {k.arg for k in call.keywords if k.arg is not None}
        if not any(isinstance(a, ast.Starred) for a in call.args):
            given |= set(named[: len(call.args)])
        forwarded |= set(named) - given
        filled |= given
        deeper, deeper_filled = _forwarded(callee, depth - 1)
        forwarded |= deeper
        filled |= deeper_filled
    return forwarded, filled - forwarded


def _read_key(node: ast.AST, mapping: str) -> str | None:
    """``"x"`` where ``node`` reads it from the dict named ``mapping``: ``mapping.pop("x", ...)``,
    ``.get`` or ``.setdefault``, or ``mapping["x"]``."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("pop", "get", "setdefault")
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == mapping
        and node.args
    ):
        key = node.args[0]
    elif (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == mapping
    ):
        key = node.slice
    else:
        return None
    return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None


def _signature_parameters(callee: Any) -> list[inspect.Parameter]:
    try:
        parameters = list(inspect.signature(callee).parameters.values())
    except (TypeError, ValueError):
        return []
    return parameters


def check_arguments(
    model: nn.Module, builders: tuple[Any, ...], arguments: Mapping[str, Any], who: str
) -> None:
    """Zoo constructors often take ``**kwargs`` and drop what they do not know (torchvision's
    MobileNetV3 does), so a misspelt argument would be searched without effect. An argument
    must be a named parameter of one of the builders, of a function a builder hands its
    ``**kwargs`` to (``_forwarded``), or of the model's class."""
    known = named_parameters(type(model).__init__)
    filled: set[str] = set()
    for builder in builders:
        forwarded, builder_filled = _forwarded(builder)
        known |= named_parameters(builder) | forwarded
        filled |= builder_filled
    unknown = sorted(set(arguments) - known)
    if unknown:
        hidden = {"self", "weights", "progress", "num_classes", *filled}
        allowed = ", ".join(sorted(known - hidden))
        raise UserCodeError(
            f"{who} takes no argument {', '.join(map(repr, unknown))}; it takes: {allowed}"
        )


# ---------------------------------------------------------------------------- custom


class CustomArchSpace(ExternalArchSpace):
    family: Literal["custom"] = "custom"
    builder: Any

    @model_validator(mode="after")
    def _builder_imports(self) -> CustomArchSpace:
        paths = self.builder if isinstance(self.builder, list) else [self.builder]
        if not paths or not all(isinstance(path, str) for path in paths):
            raise ValueError("builder: give 'package.module:function' or a list of them")
        for path in paths:
            load_callable(path, "builder")
        return self


@register_model("custom", space=CustomArchSpace, describe=_describe("builder"))
def build_custom(
    fields: Mapping[str, Any],
    input_shape: tuple[int, ...],
    n_classes: int,
    input_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    arguments = dict(fields)
    path = arguments.pop("builder", None)
    if path is None:
        raise ValueError("family 'custom' needs builder: 'package.module:function'")
    builder = load_callable(path, "builder")
    who = f"builder {path}"
    called = {"input_shape": input_shape, "n_classes": n_classes, **arguments}
    model = call_builder(who, lambda: builder(**called), called)
    check_output(model, input_shape, n_classes, who, input_dtype)
    return model


# ---------------------------------------------------------------------------- torchvision


def _torchvision_task(name: str) -> str | None:
    """The task of a torchvision model that is no classifier (``fasterrcnn_resnet50_fpn``:
    detection), or None."""
    from torchvision import models

    for task in ("detection", "segmentation", "video", "optical_flow", "quantization"):
        module = getattr(models, task, None)
        if module is not None and name in models.list_models(module=module):
            return task.replace("_", " ")
    return None


def torchvision_models() -> list[str]:
    """torchvision's classification models (detection, segmentation and video excluded)."""
    from torchvision import models

    return list(models.list_models(module=models))


def _unknown(kind: str, name: Any, known: list[str]) -> str:
    if kind == "torchvision" and (task := _torchvision_task(str(name))) is not None:
        return (
            f"torchvision model {name!r} is {'an' if task[0] in 'aeiou' else 'a'} {task} model; "
            "a search trains classifiers "
            f"(one of torchvision.models' classification models, e.g. {', '.join(known[:4])})"
        )
    close = difflib.get_close_matches(str(name), known, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(known[:8])}"
    return f"unknown {kind} model {name!r}; {hint}"


def _check_names(names: Any, known: list[str], kind: str) -> None:
    for name in names if isinstance(names, list) else [names]:
        if name not in known:
            raise ValueError(f"model: {_unknown(kind, name, known)}")


class TorchvisionArchSpace(ExternalArchSpace):
    family: Literal["torchvision"] = "torchvision"
    model: Any

    @model_validator(mode="after")
    def _known_model(self) -> TorchvisionArchSpace:
        _check_names(self.model, torchvision_models(), "torchvision")
        return self


# Models whose training-mode output is a tuple unless their auxiliary heads are off.
_AUX_LOGITS = ("googlenet", "inception_v3")


@register_model("torchvision", space=TorchvisionArchSpace, describe=_describe("model"))
def build_torchvision(
    fields: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int
) -> nn.Module:
    from torchvision import models

    arguments = dict(fields)
    name = arguments.pop("model", None)
    known = torchvision_models()
    if name not in known:
        raise ValueError(_unknown("torchvision", name, known))
    if name in _AUX_LOGITS:
        arguments.setdefault("aux_logits", False)
        arguments.setdefault("init_weights", True)
    return _zoo_model(
        f"torchvision.models.get_model({name!r})",
        lambda: models.get_model(name, weights=None, num_classes=n_classes, **arguments),
        (models.get_model_builder(name),),
        arguments,
        input_shape,
        n_classes,
    )


def _zoo_model(
    who: str,
    make: Any,
    builders: tuple[Any, ...],
    arguments: Mapping[str, Any],
    input_shape: tuple[int, int, int],
    n_classes: int,
) -> nn.Module:
    """``make()`` a zoo model, naming the arguments its constructor rejects; then check them
    by name, adapt its stem to the input and check its output shape."""
    try:
        model = make()
    except Exception as exc:
        raise UserCodeError(
            f"{who} rejects {', '.join(f'{k}={v!r}' for k, v in arguments.items()) or 'it'}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    check_arguments(model, builders, arguments, who)
    adapt_stem(model, input_shape)
    check_output(model, input_shape, n_classes, who)
    return model


# ---------------------------------------------------------------------------- timm


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ValueError(
            "family 'timm' needs the timm package: pip install 'nascomp[timm]'"
        ) from None
    return timm


class TimmArchSpace(ExternalArchSpace):
    family: Literal["timm"] = "timm"
    model: Any

    @model_validator(mode="after")
    def _known_model(self) -> TimmArchSpace:
        timm = _timm()
        for name in self.model if isinstance(self.model, list) else [self.model]:
            if not timm.is_model(name):
                raise ValueError(f"model: {_unknown('timm', name, timm.list_models())}")
        return self


@register_model("timm", space=TimmArchSpace, describe=_describe("model"))
def build_timm(
    fields: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int
) -> nn.Module:
    timm = _timm()
    arguments = dict(fields)
    name = arguments.pop("model", None)
    if not isinstance(name, str) or not timm.is_model(name):
        raise ValueError(_unknown("timm", name, timm.list_models()))
    return _zoo_model(
        f"timm.create_model({name!r})",
        lambda: timm.create_model(
            name, pretrained=False, num_classes=n_classes, in_chans=input_shape[0], **arguments
        ),
        (timm.create_model, timm.models.model_entrypoint(name)),
        arguments,
        input_shape,
        n_classes,
    )
