"""A small model registry: a string in a config (``arch["family"]``) picks a model family.

A family is registered once, with everything that belongs to it (:class:`ModelFamily`): its
builder, the ``space.arch`` section that searches it (None for families that are only built,
e.g. as a teacher) and its one-line description (the CLI's front table and MLflow). Each family
module (``nascomp.spaces.cnn``, ``.nb201``, ``.classic``) registers with ``@register_model``.
A builder takes the family's fields (the arch mapping without ``family``), the input shape
``(C, H, W)`` and the number of classes, and returns an ``nn.Module``. Weights come from
PyTorch's default initialisers, so ``torch.manual_seed`` before ``build_model`` makes the model
deterministic.
"""

from __future__ import annotations

import dataclasses
import importlib
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from nascomp.spaces.outputs import check_output
from nascomp.spaces.userfn import UserCodeError, calling

ModelBuilder = Callable[[Mapping[str, Any], tuple[int, int, int], int], nn.Module]
Describe = Callable[[Mapping[str, Any]], str]

# Imported lazily by the registry so `import spaces.models` alone never pulls in every family
# (and the family modules can import this one without a cycle).
_BUILTIN_FAMILY_MODULES = (
    "nascomp.spaces.cnn",
    "nascomp.spaces.nb201",
    "nascomp.spaces.classic",
    "nascomp.spaces.zoo",
)
# Other packages register families through this entry-point group: ``name = "pkg.module"``
# (importing it runs its ``@register_model``) or ``name = "pkg.module:builder"`` (a builder,
# registered as ``name`` when its module did not register it itself).
ENTRY_POINT_GROUP = "nascomp.models"
# Plugins that failed to load, by entry-point name: the error a config naming them gets.
_PLUGIN_ERRORS: dict[str, str] = {}
_loaded = False
# Families nascomp's modules and installed plugins registered: every process finds them by
# itself. The others were registered by the decorator in the user's own code (code_families).
_INSTALLED: set[str] = set()
_installing = False


@dataclass(frozen=True)
class ModelFamily:
    name: str
    build: ModelBuilder
    space: type | None = None  # its ``space.arch`` section (spaces.params.ArchSpaceBase)
    describe: Describe | None = None
    # The dataclass its builder reads the fields into (config_from_fields), when it has one:
    # fields it refuses are refused before anything is built (check_fields).
    config: type | None = None

    def description(self, arch: Mapping[str, Any]) -> str:
        """One line naming the model, e.g. ``cnn residual s2x1 c16 k3``."""
        if self.describe is not None:
            return self.describe(arch)
        fields = " ".join(f"{k}={v}" for k, v in sorted(arch.items()) if k != "family")
        return f"{self.name} {fields}".strip()


_REGISTRY: dict[str, ModelFamily] = {}

ConfigT = TypeVar("ConfigT")


class InfeasibleArchitecture(ValueError):
    """A sampled architecture that cannot work for this input (e.g. feature map shrinks to
    nothing). The search counts it as infeasible, never a crash."""


def register_model(
    name: str,
    *,
    space: type | None = None,
    describe: Describe | None = None,
    config: type | None = None,
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder`` as the model family ``name``, with the ``space.arch``
    section that searches it, its one-line description and the config dataclass its builder
    reads the fields into (:func:`config_from_fields`)."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if not _is_nascomp(builder):
            # nascomp's families first: a user's ``cnn`` registered before them replaced the
            # built-in one, and the built-in module's own registration then failed, leaving
            # the registry without mlp, lenet5 or any plugin for the rest of the process.
            _load_builtin_families()
        existing = _REGISTRY.get(name)
        # Re-registering the same function (module re-import) is harmless; two different
        # builders under one name would make a config ambiguous. The same function is the same
        # module and name: two plugins' ``build`` are not one function.
        if existing is not None and _where(existing.build) != _where(builder):
            raise FamilyConflict.of(existing, builder)
        _REGISTRY[name] = ModelFamily(name, builder, space, describe, config)
        if _installing:
            _INSTALLED.add(name)
        return builder

    return decorator


class FamilyConflict(ValueError):
    """A second builder registered under a family's name."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name

    @classmethod
    def of(cls, existing: ModelFamily, builder: Any) -> FamilyConflict:
        """``builder`` registered under ``existing``'s name."""
        return cls(
            f"model family {existing.name!r} is already registered (by "
            f"{_where(existing.build)}); {_where(builder)} cannot take its name",
            existing.name,
        )


def _where(builder: Any, sep: str = ".") -> str:
    """A builder's module and name (``acme_models.build``; with ``sep`` ``:``, as a config's
    ``package.module:function`` path writes it): what tells two builders apart."""
    module = getattr(builder, "__module__", None) or "?"
    return f"{module}{sep}{getattr(builder, '__qualname__', type(builder).__name__)}"


def _is_nascomp(builder: Any) -> bool:
    return str(getattr(builder, "__module__", "")).startswith("nascomp.")


def _load_builtin_families() -> None:
    global _loaded, _installing
    if _loaded or _installing:  # done, or under way (a plugin's decorator calls it)
        return
    _installing = True
    try:
        for module_name in _BUILTIN_FAMILY_MODULES:
            importlib.import_module(module_name)
        _load_plugins()
        _loaded = True
    finally:
        _installing = False


def _load_plugins() -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        plugin = (
            f"the plugin {entry.value!r} (entry point {entry.name!r} of group "
            f"{ENTRY_POINT_GROUP!r})"
        )
        try:
            loaded = entry.load()
            if callable(loaded) and entry.name not in _REGISTRY:
                register_model(entry.name)(loaded)
            elif callable(loaded) and _where(_REGISTRY[entry.name].build) != _where(loaded):
                # The entry point's builder was dropped without a word, and a config naming the
                # family built the other one.
                raise FamilyConflict.of(_REGISTRY[entry.name], loaded)
        except FamilyConflict as exc:
            _PLUGIN_ERRORS[entry.name] = f"{plugin} failed to load: {exc}"
            existing = _REGISTRY.get(exc.name)
            if existing is not None and not _is_nascomp(existing.build):
                # Two plugins of one family name: which one a config builds would depend on the
                # order of sys.path, so neither is built and a config naming it is told why.
                del _REGISTRY[exc.name]
                _INSTALLED.discard(exc.name)
                _PLUGIN_ERRORS[exc.name] = (
                    f"model family {exc.name!r} is registered by two plugins "
                    f"({_where(existing.build)} and the one of entry point {entry.name!r}, "
                    f"{entry.value!r}): uninstall one, or have one take another name"
                )
        except Exception as exc:  # a broken plugin must not break every other family
            _PLUGIN_ERRORS[entry.name] = f"{plugin} failed to load: {type(exc).__name__}: {exc}"


def model_names() -> tuple[str, ...]:
    """Names of all registered model families, sorted."""
    _load_builtin_families()
    return tuple(sorted(_REGISTRY))


def model_family(name: Any) -> ModelFamily | None:
    """The registered family ``name``, or None."""
    _load_builtin_families()
    return _REGISTRY.get(name) if isinstance(name, str) else None


def arch_spaces() -> dict[str, type]:
    """The ``space.arch`` section of every family that registered one, by family name."""
    _load_builtin_families()
    return {name: f.space for name, f in sorted(_REGISTRY.items()) if f.space is not None}


def plugin_families() -> list[str]:
    """The families a plugin registered without a ``space.arch`` section (an entry point, or
    the decorator in the user's code), sorted: ``spaces.zoo.plugin_space`` gives them one."""
    _load_builtin_families()
    return [
        name
        for name, family in sorted(_REGISTRY.items())
        if family.space is None and not family.build.__module__.startswith("nascomp.")
    ]


def code_families() -> dict[str, ModelFamily]:
    """The families the decorator registered in the user's own code (their script, a module
    of theirs), by name: a Ray worker has not run that code, so the search sends them to it
    (``adopt_families``). nascomp's families and installed plugins' are not among them."""
    _load_builtin_families()
    return {
        name: family
        for name, family in sorted(_REGISTRY.items())
        if name not in _INSTALLED and not family.build.__module__.startswith("nascomp.")
    }


def adopt_families(families: Mapping[str, ModelFamily]) -> None:
    """Register ``families`` (``code_families`` of the driver) in this process, where they
    are not registered yet."""
    _load_builtin_families()
    for name, family in families.items():
        _REGISTRY.setdefault(name, family)


def plugin_error(name: Any) -> str | None:
    """Why family ``name`` is not registered where a plugin failed to load: that plugin's
    error when it names the family, else every failed plugin's (a plugin module registers
    families of any name, so the one a config names may be in any of them); None where the
    family is registered or no plugin failed."""
    _load_builtin_families()
    if not isinstance(name, str) or name in _REGISTRY or not _PLUGIN_ERRORS:
        return None
    if name in _PLUGIN_ERRORS:
        return _PLUGIN_ERRORS[name]
    failed = "; ".join(_PLUGIN_ERRORS[key] for key in sorted(_PLUGIN_ERRORS))
    return (
        f"unknown model family {name!r}; allowed: {', '.join(sorted(_REGISTRY))}. Plugins that "
        f"failed to load may have registered it: {failed}"
    )


def describe_arch(arch: Mapping[str, Any]) -> str:
    """One line naming the model ``arch`` builds (its family's description)."""
    family = model_family(arch.get("family"))
    return family.description(arch) if family else str(arch.get("family"))


def build_model(
    arch: Mapping[str, Any],
    input_shape: tuple[int, ...],
    n_classes: int,
    input_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build the model that ``arch`` describes for inputs of ``input_shape``: (C, H, W) images
    for the image families, any shape (e.g. (F,) features) for ``custom``, ``mlp`` and
    ``lenet300100`` and for families registered by plugins. Inputs are float32 but for
    ``custom``, whose builder may take integer ids (``input_dtype`` int64: token or category
    indices for an ``nn.Embedding``)."""
    _load_builtin_families()
    if "family" not in arch:
        raise ValueError(f"arch needs a 'family' key; allowed: {', '.join(sorted(_REGISTRY))}")
    family = arch["family"]
    if (failed := plugin_error(family)) is not None:
        raise ValueError(failed)
    if family not in _REGISTRY:
        raise ValueError(
            f"unknown model family {family!r}; allowed: {', '.join(sorted(_REGISTRY))} (a "
            "family of your own is known once the code that registers it has run: in Python, "
            "import it first; for nascomp's commands, name its module in your package's "
            f"{ENTRY_POINT_GROUP!r} entry point)"
        )
    shape = _checked_input_shape(input_shape)
    if family in IMAGE_FAMILIES and len(shape) != 3:
        raise ValueError(
            f"model family {family!r} takes (C, H, W) images; the data's inputs have shape "
            f"{shape} (families for any input shape: custom, mlp)"
        )
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
    fields = {key: value for key, value in arch.items() if key != "family"}
    if input_dtype.is_floating_point and not _is_nascomp(_REGISTRY[family].build):
        # A plugin's builder, or one the user's code registered: checked as a custom builder
        # is (one line naming it where it raises or returns no model of these logits).
        return _build_foreign(_REGISTRY[family], fields, shape, n_classes)
    if input_dtype.is_floating_point:
        return _REGISTRY[family].build(fields, shape, n_classes)
    if family not in IDS_FAMILIES:
        raise ValueError(
            f"model family {family!r} takes float inputs; the data's inputs are integer ids "
            f"({input_dtype}) (use family custom, whose builder can embed them)"
        )
    return _REGISTRY[family].build(fields, shape, n_classes, input_dtype=input_dtype)


def _build_foreign(
    family: ModelFamily,
    fields: Mapping[str, Any],
    input_shape: tuple[int, ...],
    n_classes: int,
) -> nn.Module:
    """Build a model of a family a plugin or the user's code registered, as ``custom`` builds
    one: what the builder raises, and a model that is none or gives no logits of this data,
    is one line naming the builder (a traceback before, out of the pre-flight's checks)."""
    who = f"builder {_where(family.build, ':')} of model family {family.name!r}"
    called = {"fields": dict(fields), "input_shape": input_shape, "n_classes": n_classes}
    model = call_builder(who, lambda: family.build(dict(fields), input_shape, n_classes), called)
    check_output(model, input_shape, n_classes, who)
    return model


def call_builder(who: str, call: Callable[[], Any], called: Mapping[str, Any]) -> Any:
    """``call()``, the user's builder: what it raises is a :class:`UserCodeError` naming
    ``who`` and what it was ``called`` with, but an infeasible architecture (nascomp's class,
    or the user's own class of that name: their module need not import nascomp)."""
    try:
        with calling(who):
            return call()
    except InfeasibleArchitecture:
        raise
    except KeyboardInterrupt:
        raise
    # SystemExit: a builder that parses sys.argv; a BaseException of the user's own made a
    # traceback
    except BaseException as exc:
        if type(exc).__name__ == "InfeasibleArchitecture":
            raise InfeasibleArchitecture(f"{who}: {exc}") from None
        raise UserCodeError(
            f"{who} raised {type(exc).__name__}: {exc} (called with "
            f"{', '.join(f'{k}={v!r}' for k, v in called.items())})"
        ) from None


# The built-in families whose models take (C, H, W) images only.
IMAGE_FAMILIES = frozenset({"cnn", "nb201", "lenet5", "torchvision", "timm"})
# The families whose models may take integer ids (the builder says how to embed them).
IDS_FAMILIES = frozenset({"custom"})


def _checked_input_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(input_shape) < 1 or any(int(dim) < 1 for dim in input_shape):
        raise ValueError(f"input_shape must be positive sizes, e.g. (C, H, W), got {input_shape!r}")
    return tuple(int(dim) for dim in input_shape)


def check_fields(arch: Mapping[str, Any]) -> None:
    """Refuse the fields of one architecture (``family`` and its fields) that its family's
    config refuses whatever the input: an unknown key, a list where a number goes. Families
    without a config dataclass check theirs when built."""
    family = model_family(arch.get("family"))
    if family is not None and family.config is not None:
        fields = {key: value for key, value in arch.items() if key != "family"}
        config_from_fields(family.config, fields, family.name)


def config_from_fields(
    config_cls: type[ConfigT], fields: Mapping[str, Any], family: str
) -> ConfigT:
    """Build a family's config dataclass from arch fields, naming any unknown key."""
    allowed = [field.name for field in dataclasses.fields(config_cls)]  # type: ignore[arg-type]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown field(s) for model family {family!r}: {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed)}"
        )
    missing = [
        field.name
        for field in dataclasses.fields(config_cls)  # type: ignore[arg-type]
        if field.name not in fields
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"model family {family!r} needs field(s): {', '.join(missing)}")
    return config_cls(**fields)


def require_int(name: str, value: Any, *, minimum: int = 1, allowed: tuple[int, ...] = ()) -> int:
    """Validate an integer config field (numpy ints from a sampler are accepted)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {value!r}") from None
    if allowed and number not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {number}")
    if not allowed and number < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {number}")
    return number
