"""One trial as one plain function: config in, metrics (and the compressed model) out.

No Ray and no MLflow here: the search, the tests and ``nascomp reproduce`` all call
:func:`run_trial`, which is why a reproduced run matches the searched one exactly on CPU.

Phases, each reporting once per epoch:
1. ``train``: the student learns, with Hinton distillation from the teacher when it is on
   (plus a FitNets feature hint when ``distill.features`` is);
2. ``prune``: pruning ramps up to the sampled ratio (cubic schedule), fine-tuning as it goes;
3. ``quant``: quantization-aware fine-tuning at the sampled bit-width (32 skips it).
Then accuracy on the validation split (the search objective) and on the test split (reported,
never used to select), and the model's size, MACs and latency.

Restarts: given a ``checkpoint`` callable, each epoch hands it the metrics together with the
trial's whole state (``trainers.checkpoint``); ``resume`` with such a state continues with the
next epoch, and on CPU ends exactly as the uninterrupted run would.

What is measured is what would be shipped. ``size_bytes`` is the exact size of the artifact
``compressors.export.save_compressed`` writes for the evaluated model (which loads back to the
same predictions), with the coding ``measure.coding`` names (``entropy``: Deep Compression's
third stage). A mixed-precision trial (``quant.mixed``) chooses its per-layer widths when QAT
starts and reports them in ``info["layer_bits"]``. Every trial also builds its ONNX file
(``compressors.onnx_export``): int8 QDQ for 8-bit weights and activations, fp32 otherwise (other
widths folded in); with mixed widths, its 8-bit layers int8 and the others float, each layer's
form in ``info["latency_layers"]``; ``onnx_bytes``
is its size and ``onnx_agreement`` its top-1 agreement with the evaluated model on the
validation split. Latency is timed on the runtime ``measure.runtime`` names: by default ONNX
Runtime running that very file on CPU trials, PyTorch on GPU trials (its deployable form,
``compressors.deploy.deployable_form``: on the CPU int8 x86 at 8 bits, folded float at widths
no CPU backend runs, the model itself at 32 bits; on a GPU folded float32 at every width,
torch.ao's int8 kernels being the CPU's). ``info["latency_form"]`` names runtime and
precision, e.g. ``onnxruntime int8-qdq`` or ``torch int8-x86``. Accuracy stays the evaluated
(fake-quantized) model's; ``info["deploy_agreement"]`` is torch's int8 form's agreement.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from nascomp.compressors.allocation import budget_layer_bits, group_layer_bits
from nascomp.compressors.deploy import FORM_INT8, deployable_form
from nascomp.compressors.distillation import FeatureTap, make_projector
from nascomp.compressors.export import layer_shapes, reshape_layers, round_to_storage
from nascomp.compressors.layers import layer_kinds
from nascomp.compressors.measure import (
    count_macs,
    count_nonzero_params,
    count_params,
    measure_latency_ms,
)
from nascomp.compressors.onnx_export import OnnxForm, onnx_form
from nascomp.compressors.pruning import Pruner, make_pruner
from nascomp.compressors.quantization import (
    observer_flags,
    prepare_qat,
    restore_observer_flags,
    weight_bits_by_layer,
)
from nascomp.compressors.shapes import free_tensor_shapes, reshape_free_tensors
from nascomp.compressors.size import model_size_bytes
from nascomp.spaces.models import InfeasibleArchitecture, build_model
from nascomp.trainers.checkpoint import (
    STATE_FORMAT,
    StateOfAnotherVersion,
    check_resumable,
    config_fingerprint,
    detached_copy,
    flat_config,
    restore_rng_state,
    rng_state,
)
from nascomp.trainers.config import TrialConfig
from nascomp.trainers.init import apply_weights, initial_weights
from nascomp.trainers.loop import (
    Distillation,
    FeatureHint,
    balanced_weights,
    make_optimizer,
    predicted_classes,
    split_accuracy,
    split_balanced_accuracy,
    top1_agreement,
    train_epoch,
    warm_optimizers,
)
from nascomp.trainers.seeding import seed_everything
from nascomp.trainers.stream import Data, for_trial
from nascomp.trainers.teacher import TeacherJob, build_teacher, teacher_logits
from nascomp.trainers.trained import REPLAYED_KEY, TrainedStore

Report = Callable[[dict[str, Any]], None]
# Called after each epoch with the epoch's metrics and a function that makes the state to
# resume from. The state is a copy of the model and optimizer (``Trial._state``), made only
# when the callback keeps it: a search's trials send one every ``checkpoint_every_s`` seconds,
# and copying it after every epoch took about 1% of a small model's training.
StateFn = Callable[[], dict[str, Any]]
Checkpoint = Callable[[dict[str, Any], StateFn], None]
STATUS_OK = "ok"
STATUS_INFEASIBLE = "infeasible"
# The trial's note (info["restarted"]) where it could not resume its checkpoint.
RESTARTED_NOTE = "its checkpoint was saved by an older nascomp: trained from the start"
# Activation ranges of the int8 form: 4 batches of 64 training images, enough for the
# histogram observers and a small fraction of a second to convert.
CALIBRATION_BATCHES = 4
CALIBRATION_BATCH_SIZE = 64
# ONNX Runtime's min/max calibration of the shipped int8 file: 1,024 images (16 batches) took
# top-1 agreement from 98.9% (256) to 99.4% on digits, for a fraction of a second.
ONNX_CALIBRATION_BATCHES = 16
# Training images the budget allocator measures each layer's sensitivity on (1,024: a
# forward pass per layer and width, a fraction of a second for the quickstart models).
SENSITIVITY_IMAGES = 1024


@dataclass
class TrialOutcome:
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    model: nn.Module | None = None
    reason: str = ""
    # Facts that are words, not numbers (e.g. which form of the model was timed); MLflow tags.
    info: dict[str, str] = field(default_factory=dict)
    # The shipped ONNX file (int8 QDQ for 8-bit trials), serialized; None if none was built.
    onnx: bytes | None = None


def run_trial(
    config: Mapping[str, Any] | TrialConfig,
    *,
    teacher_state: dict[str, Tensor] | None = None,
    report: Report | None = None,
    checkpoint: Checkpoint | None = None,
    resume: dict[str, Any] | None = None,
    trained: TrainedStore | None = None,
) -> TrialOutcome:
    """Train, prune, quantize, evaluate and measure one student described by ``config``.

    ``report(metrics)`` is called once per epoch; with ``checkpoint``, ``checkpoint(metrics,
    make_state)`` is called instead, where ``make_state()`` returns the state to resume from
    (call it before returning: the next epoch changes the model). ``resume``: such a state (of
    the same config), to continue from the epoch after it. ``trained``: a store of train-phase
    end states (``trainers.trained``): the trial starts from one when an earlier trial trained
    the same phase (its epochs are reported again, as they were), and leaves its own there
    otherwise.
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_flat(dict(config))
    torch.set_num_threads(cfg.threads)
    warm_optimizers()  # before any timing: train_seconds is the training's own
    # One copy per worker process, shared by the trials it runs: in-memory splits resident on
    # the device, or a streamed dataset read by this trial's loader workers.
    data = for_trial(cfg.data.load(threads=cfg.threads), cfg.device, cfg.threads)
    seed_everything(cfg.seed)
    try:
        model = build_model(cfg.arch, data.input_shape, data.n_classes, data.input_dtype)
    except InfeasibleArchitecture as exc:
        return TrialOutcome(status=STATUS_INFEASIBLE, reason=str(exc))
    started_from = None
    if cfg.train.init is not None:  # trained weights (the user's, or a parent's), where they fit
        state = initial_weights(cfg.train.init, cfg.train.init_sha256)
        started_from = apply_weights(model, state, cfg.train.init_match).describe(cfg.train.init)
    model = model.to(cfg.device)
    restarted = None
    if resume is not None:
        try:
            check_resumable(resume, cfg)
        except StateOfAnotherVersion:
            # A checkpoint an older nascomp saved, before states kept their config: a field
            # added to the config since changed its digest. The trial had failed; it trains
            # from the start instead (the checkpoint's epochs are lost, the trial is not).
            resume, restarted = None, RESTARTED_NOTE
    trial = _Trial(
        cfg, data, model, teacher_state, report or (lambda _: None), checkpoint, store=trained
    )
    trial.started_from = started_from
    trial.restarted = restarted
    # The layer kinds the config's version of nascomp compressed (compressors.layers)
    with layer_kinds(cfg.quant.layers):
        if resume is not None:
            trial.restore(resume)
        elif trained is not None:
            trial.start_trained(trained)
        return trial.run()


def _prunes(cfg: TrialConfig) -> bool:
    return cfg.prune.method != "none" and cfg.prune.ratio > 0


@dataclass(frozen=True)
class _Schedule:
    """Where each phase's epochs fall in the trial's count (phases that are off have none)."""

    n_train: int
    n_prune: int
    n_quant: int

    @classmethod
    def of(cls, cfg: TrialConfig) -> _Schedule:
        train = cfg.train
        n_prune = train.prune_epochs if _prunes(cfg) else 0
        return cls(train.epochs, n_prune, train.qat_epochs if cfg.quant.quantizes() else 0)

    def n_done(self, phase: str, epoch: int) -> int:
        """Epochs of ``phase`` finished once the trial has finished ``epoch`` epochs."""
        first = {"train": 0, "prune": self.n_train, "quant": self.n_train + self.n_prune}[phase]
        n_epochs = {"train": self.n_train, "prune": self.n_prune, "quant": self.n_quant}[phase]
        return min(max(epoch - first, 0), n_epochs)


class _Trial:
    """The mutable state of one run_trial call, split into phases that fit on a screen."""

    def __init__(
        self,
        cfg: TrialConfig,
        data: Data,
        model: nn.Module,
        teacher_state: dict[str, Tensor] | None,
        report: Report,
        checkpoint: Checkpoint | None = None,
        store: TrainedStore | None = None,
    ) -> None:
        self.cfg, self.data, self.model, self.report = cfg, data, model, report
        self.checkpoint = checkpoint
        # Splits (trainers/split.py): tensors sliced per batch, or streamed through a loader.
        self.train, self.val, self.test = data.train, data.val, data.test
        self.class_weight = (
            balanced_weights(self.train.labels, data.n_classes)
            if cfg.train.class_weight == "balanced"
            else None
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.schedule = _Schedule.of(cfg)
        self.epoch = 0
        self.distill = self._distillation(teacher_state)
        self.pruner: Pruner | None = None
        self.onnx: OnnxForm | None = None  # the shipped file, built when the trial measures
        self.quantized = False
        self.val_classes: Tensor | None = None  # the final model's, set by _evaluate
        # Per-layer widths (mixed precision), chosen when QAT starts; None until then.
        self.layer_bits: dict[str, int] | None = None
        # Set by restore: the optimizer state of the phase the resumed checkpoint was taken in.
        self.resumed_optimizer: dict[str, Any] | None = None
        self.seconds_before = 0.0  # training time spent before the resumed checkpoint
        self.started = time.perf_counter()
        # Seconds since started spent reporting, checkpointing and keeping the trained state
        # (the platform's work, which the scheduler and report interval set): not training.
        self.platform_seconds = 0.0
        # Train-phase reuse (trainers.trained): the store, this run's train-epoch metrics
        # (kept when the phase ends), and the key of the state it started from, if any.
        self.store = store
        self.train_metrics: list[dict[str, Any]] = []
        self.started_from: str | None = None  # train.init: what the file gave (run_trial)
        self.trained_from: str | None = None
        self.restarted: str | None = None  # run_trial: a checkpoint it could not resume
        # What each of its states says it belongs to (check_resumable), made once per trial
        self.identity = {"fingerprint": config_fingerprint(cfg), "config": flat_config(cfg)}

    def _distillation(self, teacher_state: dict[str, Tensor] | None) -> Distillation | None:
        if not self.cfg.distill.enabled:
            return None
        if teacher_state is None:
            raise ValueError("distill.enabled is true but no teacher weights were given")
        distill = self.cfg.distill
        hint = self._feature_hint(teacher_state) if distill.features else None
        if self.cfg.train.augment.enabled():
            # Augmented batches differ from every stored row: the teacher runs per batch.
            teacher = (
                build_teacher(self.cfg.teacher, self.data, teacher_state).to(self.cfg.device).eval()
            )
            return Distillation(None, distill.temperature, distill.alpha, hint, teacher=teacher)
        logits = teacher_logits(TeacherJob.of_trial(self.cfg), self.data, teacher_state)
        return Distillation(logits, distill.temperature, distill.alpha, hint)

    def _feature_hint(self, teacher_state: dict[str, Tensor]) -> FeatureHint:
        teacher = (
            build_teacher(self.cfg.teacher, self.data, teacher_state).to(self.cfg.device).eval()
        )
        student_tap, teacher_tap = FeatureTap(self.model), FeatureTap(teacher)
        probe = self.train.head(2)
        # Eval-mode probes: the shapes are all that is wanted, not BatchNorm updates.
        self.model.eval()
        with torch.no_grad():
            self.model(probe)
            teacher(probe)
        self.model.train()
        projector = make_projector(student_tap.feature, teacher_tap.feature).to(self.cfg.device)
        weight = self.cfg.distill.feature_weight
        return FeatureHint(teacher, student_tap, teacher_tap, projector, weight)

    def run(self) -> TrialOutcome:
        self.started = time.perf_counter()
        self.platform_seconds = 0.0
        train = self.cfg.train
        self._phase("train", train.epochs, lr=train.lr)
        self._end_feature_hint()
        if _prunes(self.cfg):
            self._prune()
        if self.cfg.quant.quantizes():
            self._prepare_qat()
            self._phase("quant", train.qat_epochs, lr=train.lr * train.finetune_lr_scale)
        # Evaluate exactly what the artifact will hold (matters at 16 bits only).
        round_to_storage(self.model)
        metrics = {"train_seconds": self._train_seconds()}
        metrics.update(self._evaluate())
        info: dict[str, str] = {}
        if self.started_from is not None:
            info["init"] = self.started_from
        if self.store is not None:
            metrics["reused_epochs"] = float(self.schedule.n_train if self.trained_from else 0)
        if self.trained_from is not None:
            info["trained_from"] = self.trained_from
        if self.restarted is not None:
            info["restarted"] = self.restarted
        if self.cfg.quant.mixed != "none":
            # The widths the trial chose, logged with the run; reproduce chooses them again.
            info["layer_bits"] = json.dumps(weight_bits_by_layer(self.model), sort_keys=True)
        metrics.update(self._measure(info))
        if self.pruner is not None:
            # What prune.ratio achieved: a structured ratio is of channels, and a layer that
            # loses outputs narrows the layers it feeds (0.5 removes about 3/4 of a conv's)
            metrics["pruned_fraction"] = self.pruner.sparsity
        self.model.eval()
        onnx = self.onnx.data if self.onnx is not None else None
        return TrialOutcome(status="ok", metrics=metrics, model=self.model, info=info, onnx=onnx)

    def _make_pruner(self) -> Pruner:
        return make_pruner(self.model, self.cfg.prune, self.train.head(2))

    def _prune(self) -> None:
        n_epochs = self.cfg.train.prune_epochs
        if self.pruner is None:  # else restored from a checkpoint taken after it was made
            self.pruner = self._make_pruner()
            if n_epochs == 0:
                self.pruner.update(1.0)
                return
        lr = self.cfg.train.lr * self.cfg.train.finetune_lr_scale
        optimizer = None
        n_done = self.schedule.n_done("prune", self.epoch)
        if 0 < n_done < n_epochs:
            optimizer = self._resumed_optimizer(lr)
        for epoch in range(n_done, n_epochs):
            # Each step of the cubic ramp is followed by an epoch of fine-tuning at that sparsity.
            changed = self.pruner.update((epoch + 1) / n_epochs)
            if optimizer is None or changed:
                optimizer = self._optimizer(lr)
            self._epoch("prune", optimizer)

    def _end_feature_hint(self) -> None:
        """Hints shape the representation while it is learned (FitNets' first stage); pruning
        and QAT fine-tune with Hinton's loss alone. Structured pruning changes the student's
        feature width, which a trained projector could not follow."""
        if self.distill is not None and self.distill.hint is not None:
            self.distill.hint.remove()
            self.distill = replace(self.distill, hint=None)

    def _prepare_qat(self) -> None:
        if not self.quantized:
            if self.layer_bits is None:  # else restored: the widths chosen before the restart
                self.layer_bits = self._mixed_layer_bits()
            prepare_qat(self.model, self.cfg.quant, self.layer_bits)
            self.quantized = True

    def _mixed_layer_bits(self) -> dict[str, int]:
        """Per-layer widths of a mixed-precision trial ({} otherwise). The budget allocator
        measures sensitivity on the first ``SENSITIVITY_IMAGES`` training images, after
        training and pruning, so the widths are a function of the config and seed."""
        quant = self.cfg.quant
        if quant.mixed == "groups":
            return group_layer_bits(self.model, quant)
        if quant.mixed == "budget":
            inputs = self.train.head(SENSITIVITY_IMAGES)
            labels = self.train.labels[: inputs.shape[0]]
            batches = list(zip(inputs.split(256), labels.split(256), strict=True))
            return budget_layer_bits(self.model, quant, batches)
        return {}

    def _phase(self, phase: str, n_epochs: int, lr: float) -> None:
        n_done = self.schedule.n_done(phase, self.epoch)
        if n_done == n_epochs:
            return
        optimizer = self._resumed_optimizer(lr) if n_done > 0 else self._optimizer(lr)
        for _ in range(n_epochs - n_done):
            self._epoch(phase, optimizer)

    def _optimizer(self, lr: float) -> torch.optim.Optimizer:
        train = self.cfg.train
        trained: nn.Module = self.model
        if self.distill is not None and self.distill.hint is not None:
            trained = nn.ModuleList([self.model, self.distill.hint.projector])
        return make_optimizer(trained, train.optimizer, lr, train.weight_decay, train.momentum)

    def _resumed_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """The optimizer of a phase resumed in its middle, with its state (moments, steps)."""
        assert self.resumed_optimizer is not None, "resumed mid-phase without optimizer state"
        optimizer = self._optimizer(lr)
        optimizer.load_state_dict(self.resumed_optimizer)
        self.resumed_optimizer = None
        return optimizer

    def _epoch(self, phase: str, optimizer: torch.optim.Optimizer) -> None:
        stats = train_epoch(
            self.model,
            self.train,
            optimizer=optimizer,
            batch_size=self.cfg.train.batch_size,
            generator=self.generator,
            distill=self.distill,
            after_step=self.pruner.after_step if self.pruner is not None else None,
            augment=self.cfg.train.augmentation(),
            class_weight=self.class_weight,
        )
        self.epoch += 1
        metrics = {
            "phase": phase,
            "epoch": self.epoch,
            "loss": stats.loss,
            "train_accuracy": stats.train_accuracy,
            **self._accuracies("val", predicted_classes(self.model, self.val)),
            "params": count_params(self.model),
            "nonzero_params": count_nonzero_params(self.model),
            "size_bytes": model_size_bytes(self.model, coding=self.cfg.measure.coding),
        }
        if phase == "train":
            self.train_metrics.append(metrics)
        # The phase's end state, for the trials that compress the same trained model otherwise
        # (a trial resumed mid-phase lacks the earlier epochs' metrics: it keeps nothing).
        keep = (
            self.store is not None
            and phase == "train"
            and self.epoch == self.schedule.n_train
            and len(self.train_metrics) == self.epoch
        )
        if keep:
            assert self.store is not None
            saving = time.perf_counter()
            state = self._state(phase, optimizer)
            self.store.save(self.cfg, state, self.train_metrics)
            self.platform_seconds += time.perf_counter() - saving
            self._send(metrics, lambda: state)
        else:
            self._send(metrics, lambda: self._state(phase, optimizer))

    def _send(self, metrics: dict[str, Any], make_state: StateFn) -> None:
        """An epoch's metrics to ``checkpoint`` with its state's maker, or to ``report``.
        The time it takes (a state copied and written: every epoch under mo_asha) is the
        platform's, not the model's: ``train_seconds`` leaves it out."""
        sending = time.perf_counter()
        try:
            if self.checkpoint is None:
                self.report(metrics)
            else:
                self.checkpoint(metrics, make_state)
        finally:
            self.platform_seconds += time.perf_counter() - sending

    def start_trained(self, store: TrainedStore) -> None:
        """Start from the store's end state of this trial's train phase when it holds one:
        the state is restored as a resume would restore it, and the phase's epochs are
        reported again (with that state, now this trial's, to checkpoint)."""
        found = store.load(self.cfg)
        if found is None:
            return
        # Its train_seconds stay the phase's as it was measured: the trial's own seconds are
        # added to them, so train_seconds is what the model cost, reused or not (an objective
        # that counted only the compression favoured reused trials, 0.08 s against 1.8 s).
        state = {**found.state, **self.identity}
        self.restore(state)
        self.resumed_optimizer = None  # the next phase makes its own optimizer
        self.trained_from = found.key
        for metrics in found.epochs:
            self._send({**metrics, REPLAYED_KEY: 1}, lambda: state)

    def _train_seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started - self.platform_seconds

    def _state(self, phase: str, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Everything the epochs after this one depend on (see ``restore``)."""
        hint = self.distill.hint if self.distill is not None else None
        state = {
            "format": STATE_FORMAT,
            **self.identity,  # compared at resume (check_resumable)
            "epoch": self.epoch,
            "phase": phase,
            "train_seconds": self._train_seconds(),
            "layer_shapes": layer_shapes(self.model),
            "free_tensor_shapes": free_tensor_shapes(self.model),
            "quantized": self.quantized,
            "layer_bits": self.layer_bits,
            "model": self.model.state_dict(),
            "observed": observer_flags(self.model),
            "optimizer": optimizer.state_dict(),
            "pruner": self.pruner.state_dict() if self.pruner is not None else None,
            "projector": hint.projector.state_dict() if hint is not None else None,
            "generator": self.generator.get_state(),
            "rng": rng_state(self.cfg.device),
        }
        return detached_copy(state)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``_state``'s snapshot: first redo what changed the model's structure
        before it was taken (feature hint ended, channels removed, QAT layers swapped in), then
        load every value. The caller checked that the state belongs to this config."""
        self.epoch = int(state["epoch"])
        if self.epoch >= self.schedule.n_train:
            self._end_feature_hint()
        # Structured pruning removed channels: the fresh model takes the pruned shapes first.
        reshape_layers(self.model, state["layer_shapes"])
        reshape_free_tensors(self.model, state.get("free_tensor_shapes", {})).to(self.cfg.device)
        if state["pruner"] is not None:
            self.pruner = self._make_pruner()  # made on the float model, as in the first run
            self.pruner.load_state_dict(state["pruner"])
        if state["quantized"]:
            self.layer_bits = state.get("layer_bits")
            self._prepare_qat()
        self.model.load_state_dict(state["model"])
        self.model.train()  # as after every epoch (tracing for the pruner left it in eval)
        restore_observer_flags(self.model, state["observed"])
        if self.distill is not None and self.distill.hint is not None:
            self.distill.hint.projector.load_state_dict(state["projector"])
        self.resumed_optimizer = state["optimizer"]
        self.seconds_before = float(state["train_seconds"])
        self.generator.set_state(state["generator"])
        # Last: building the pieces above drew from the global RNG.
        restore_rng_state(state["rng"], self.cfg.device)

    def _evaluate(self) -> dict[str, float]:
        # The validation classes are kept: the deployed forms' agreement is measured against
        # them (_agreement), and the model does not change in between.
        self.val_classes = predicted_classes(self.model, self.val)
        return {
            **self._accuracies("val", self.val_classes),
            **self._accuracies("test", predicted_classes(self.model, self.test)),
        }

    def _accuracies(self, role: str, classes: Tensor) -> dict[str, float]:
        """Top-1 and balanced accuracy of ``classes`` on the split ``role``."""
        split = self.val if role == "val" else self.test
        return {
            f"{role}_accuracy": split_accuracy(classes, split),
            f"{role}_balanced_accuracy": split_balanced_accuracy(classes, split),
        }

    def _measure(self, info: dict[str, str]) -> dict[str, float]:
        model, shape, measure = self.model, self.data.input_shape, self.cfg.measure
        dtype = self.data.input_dtype
        timing = {
            "input_dtype": dtype,
            "n_warmup": measure.n_warmup,
            "n_repeat": measure.n_repeat,
            "device": self.cfg.device,
        }
        metrics: dict[str, float] = {}
        self.onnx = self._onnx(info)
        if self.onnx is not None:
            metrics["onnx_bytes"] = float(len(self.onnx.data))
            metrics["onnx_agreement"] = self._agreement(self.onnx.module)
            # the shipped file's form, whatever runtime latency is timed on (export.json)
            info["onnx_form"] = self.onnx.name
        runtime = measure.resolved_runtime(self.cfg.device)
        if runtime == "onnxruntime" and self.onnx is None:
            if measure.runtime == "onnxruntime":  # asked for by name: the file or nothing
                raise ValueError(
                    "measure.runtime: onnxruntime times the trial's ONNX file and this model "
                    "has none; measure.runtime: auto or torch times PyTorch's form instead "
                    f"({info['onnx']})"
                )
            # auto: PyTorch's form, which the trial's line and tag say (its latency is not
            # comparable with the ONNX Runtime latencies beside it on the front)
            info["latency_fallback"] = "no ONNX file: latency timed in PyTorch"
        if runtime == "onnxruntime" and self.onnx is not None:
            timed, info["latency_form"] = self.onnx.module, self.onnx.name
            timing["device"] = "cpu"  # the CPU package of ONNX Runtime
            if self.onnx.layers:  # mixed widths: which layer ran int8, which float
                info["latency_layers"] = json.dumps(self.onnx.layers, sort_keys=True)
        else:
            timed, form = self._deployable()
            info["latency_form"] = form if form.startswith("onnxruntime") else f"torch {form}"
            if form == FORM_INT8:
                info["deploy_agreement"] = f"{self._agreement(timed):.4f}"
        if self.cfg.prune.method == "unstructured" and self.cfg.prune.ratio > 0:
            # No CPU kernel skips zeros at these sparsities: the timing includes them.
            info["sparse_execution"] = "dense kernels (unstructured zeros are not skipped)"
        return {
            "params": count_params(model),
            "nonzero_params": count_nonzero_params(model),
            "size_bytes": model_size_bytes(model, coding=measure.coding),
            "macs": count_macs(model, shape, dtype),
            "latency_ms": measure_latency_ms(timed, shape, batch_size=1, **timing),
            "latency_batch_ms": measure_latency_ms(
                timed, shape, batch_size=measure.latency_batch_size, **timing
            ),
            **metrics,
            "epochs": self.epoch,
        }

    def _onnx(self, info: dict[str, str]) -> OnnxForm | None:
        """The ONNX file this trial ships (int8 QDQ at 8 bits), or None with the reason in
        ``info["onnx"]`` when no exporter takes the model (it is still timed in PyTorch)."""
        try:
            return onnx_form(
                self.model,
                bits=self._uniform_bits(),
                act_bits=self.cfg.quant.act_bits,
                example_inputs=self.train.head(1),
                calibration_batches=self._calibration(ONNX_CALIBRATION_BATCHES),
                threads=self.cfg.threads,
                layer_bits=(
                    None if self.cfg.quant.mixed == "none" else weight_bits_by_layer(self.model)
                ),
            )
        except Exception as exc:  # a model no exporter or quantizer takes
            info["onnx"] = f"no ONNX file: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            return None

    def _uniform_bits(self) -> int:
        """The one weight width of the model for its deployable forms; with mixed widths, 32:
        PyTorch's forms then run float weights (the widths folded in), as ``latency_form``
        says; the ONNX file runs the 8-bit layers int8 (``onnx_form``'s ``layer_bits``)."""
        if self.cfg.quant.mixed == "none":
            return self.cfg.quant.bits
        widths = set(weight_bits_by_layer(self.model).values())
        return widths.pop() if len(widths) == 1 else 32

    def _calibration(self, n_batches: int = CALIBRATION_BATCHES) -> list[Tensor]:
        size = CALIBRATION_BATCH_SIZE
        return list(self.train.head(n_batches * size).split(size))

    def _deployable(self) -> tuple[nn.Module, str]:
        calibration = self._calibration()
        return deployable_form(
            self.model,
            bits=self._uniform_bits(),
            act_bits=self.cfg.quant.act_bits,
            example_inputs=self.train.head(1),
            calibration_batches=calibration,
        )

    def _agreement(self, deployed: nn.Module) -> float:
        """Top-1 agreement of the deployed form with the evaluated model (validation split):
        the evidence that its latency belongs to the accuracy reported next to it."""
        return top1_agreement(self.model, deployed, self.val, expected=self.val_classes)
