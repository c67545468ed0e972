"""One coordinator per Trainer: what the visualization callbacks share, so that none reads another's attributes.

    hub = coordinator_of(trainer)               # this Trainer's (another Trainer, as train.py validate's or a
                                                # Drawer's, has its own)
    hub.register(cb, "selectivity", per_class=500, units=["relu_3"])   # at setup: replaces cb's earlier one
    shared = hub.fixed_set_pass(trainer, net, step, 500, x, y, ["relu_3"], [], 10, shown)   # once per epoch
    hub.add_listener(evolution.record_snapshot)  # at setup
    hub.publish("filters/conv_1", step, png, Source.of(cb))   # by RenderContext.add_image, for every picture

It owns:

- the registrations: at ``setup`` each enabled visualization callback registers its technique and the fixed-set
  layers it reads (``VisualizationCallback.share_layers``); a setup again replaces them, a disabled callback has
  none, and one turned off after setup drops out of the shared pass;
- the shared pass: per fixed set (``per_class``) and epoch, the per-sample unit activations and class-mean maps of
  every registered layer, gathered by an ``EpochCapture`` from the validation loop's own forward passes where it
  can, else by one ``activation_pass``: one pass serves every callback;
- the snapshot listeners: every logged picture is published to them (the evolution callback is one).

Colour scales stay with each callback (``VisualizationCallback.scale``): no two callbacks share a picture's scale,
and they are part of the callback's checkpoint state, which a resumed fit and the drawing process's reports carry.

Callbacks and listeners are held weakly: Lightning binds the module's ``log`` to every callback, so a strong
reference would keep the Trainer, this registry's key, alive.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler

from .data import DataFacts, data_facts, val_loader
from .hooks import ActivationStats, LayerProbe, activation_pass

__all__ = [
    "Coordinator",
    "coordinator_of",
    "Source",
    "Registration",
    "SharedPass",
    "EpochCapture",
    "Listener",
    "pass_key",
    "sequential_batch_size",
]


@dataclass(frozen=True)
class Source:
    """What a snapshot listener learns of the callback that drew a picture: facts of its class, not the callback."""

    technique: str
    evolves: bool = True  # drawn at several epochs (the evolution callback may stack its snapshots)
    class_tags: bool = False  # tags are <technique>/<class>, one picture per class

    @classmethod
    def of(cls, callback: Any) -> Source:
        return cls(
            str(callback.technique),
            bool(getattr(callback, "evolves", True)),
            bool(getattr(callback, "class_tags", False)),
        )


Listener = Callable[[str, int, bytes, Source], None]  # (tag, step, PNG, source)


@dataclass(frozen=True)
class Registration:
    """What one callback registered: its technique, and the fixed set (``per_class``) layers it reads, if any."""

    technique: str
    per_class: int | None = None
    units: tuple[str, ...] = ()  # per-sample unit activations
    maps: tuple[str, ...] = ()  # per-class mean maps


def sequential_batch_size(trainer: pl.Trainer, facts: DataFacts) -> int | None:
    """The validation loader's batch size when its batch ``b`` holds the validation samples ``b * size, ...`` in
    order, in one process (so a batch's samples are known by position); else None."""
    if trainer.world_size != 1:
        return None
    if facts.tensors is not None:  # the fast path: MNISTDataModule's TensorBatches over the same tensors
        loader = trainer.val_dataloaders
        ordered = getattr(loader, "shuffle", True) is False and getattr(loader, "x", None) is facts.tensors[0]
        return int(loader.batch_size) if ordered else None
    loader = val_loader(trainer)
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, SequentialSampler) and loader.batch_size:
        return int(loader.batch_size)
    return None


def pass_key(trainer: pl.Trainer, step: int, net: nn.Module, n: int, facts: DataFacts) -> tuple:
    """What identifies one epoch's fixed-set statistics: the image step, the net, the set's size, the weights'
    version (the global step) and the data."""
    return step, id(net), n, getattr(trainer, "global_step", 0), id(facts)


class EpochCapture:
    """The fixed-set statistics of one epoch, gathered from the validation loop's own forward passes instead of a
    pass of their own: a ``LayerProbe`` on the shared layers keeps each validation batch's activations, and the
    samples of the fixed set among them go into an ``ActivationStats``. It gives up (and the callbacks make their own
    pass) unless every fixed-set sample was seen exactly once, with the label expected at its position, in the net's
    own dtype: under autocast (``bf16-mixed``) the loop's activations are bf16, and the pictures are float32."""

    def __init__(
        self,
        net: nn.Module,
        stats: ActivationStats,
        fixed_idx: Tensor,
        labels: Tensor,
        n: int,
        batch_size: int,
        key: tuple,
    ) -> None:
        self.stats, self.batch_size, self.key = stats, batch_size, key
        param = next(net.parameters(), None)
        self.dtype = param.dtype if param is not None else torch.get_default_dtype()
        self.where = torch.full((n,), -1, dtype=torch.long)  # validation index -> position in the fixed set
        self.where[fixed_idx.cpu()] = torch.arange(len(fixed_idx))
        self.labels = labels.cpu()  # of the fixed set, in its order
        self.probe: LayerProbe | None = LayerProbe(net, stats.layers)
        self.failed = False

    def add(self, batch: Any, batch_idx: int) -> None:
        if self.failed or self.probe is None:
            return
        acts, calls = self.probe.take()
        y = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        start = batch_idx * self.batch_size
        if not isinstance(y, Tensor) or any(c != 1 for c in calls.values()) or start + len(y) > len(self.where):
            return self.close(failed=True)  # not (x, y) batches, or the net did not run once per batch
        if any(a.dtype != self.dtype for a in acts.values() if isinstance(a, Tensor) and a.is_floating_point()):
            return self.close(failed=True)  # autocast: the callbacks' own pass gives the net's own dtype
        pos = self.where[start : start + len(y)]
        mask = pos >= 0
        pos = pos[mask]
        if not pos.numel():
            return
        y = y.detach().cpu().long()[mask]
        if not torch.equal(y, self.labels[pos]) or self.stats.seen[pos].any():
            return self.close(failed=True)  # the batches are not the samples we take them for
        self.stats.add({name: a[mask.to(a.device)] for name, a in acts.items()}, y, pos)

    def complete(self) -> bool:
        return not self.failed and bool(self.stats.seen.all())

    def close(self, failed: bool = False) -> None:
        self.failed = self.failed or failed
        if self.probe is not None:
            self.probe.remove()
            self.probe = None


@dataclass
class SharedPass:
    """One fixed set's statistics at one epoch (``key``): ``{layer: (N, U)}`` unit activations and ``{layer:
    (len(shown), *shape)}`` class-mean maps, filled as callbacks ask; ``capture``: this epoch's ``EpochCapture``."""

    key: tuple | None = None
    acts: dict[str, Tensor] = field(default_factory=dict)
    maps: dict[str, Tensor] = field(default_factory=dict)
    capture: EpochCapture | None = None


def _reference(listener: Listener) -> Callable[[], Listener | None]:
    """A weak reference to a bound method (its callback may hold the Trainer), a plain one to anything else."""
    if inspect.ismethod(listener):
        return weakref.WeakMethod(listener)
    return lambda: listener


class Coordinator:
    """What the visualization callbacks of one Trainer share (see the module's docstring); get it with
    ``coordinator_of(trainer)``."""

    def __init__(self) -> None:
        self._registered: weakref.WeakKeyDictionary[Any, Registration] = weakref.WeakKeyDictionary()
        self._listeners: list[Callable[[], Listener | None]] = []
        self._feeders: weakref.WeakKeyDictionary[Any, EpochCapture] = weakref.WeakKeyDictionary()
        self.passes: dict[int, SharedPass] = {}  # per_class -> the latest epoch's statistics of that fixed set

    # ------------------------------------------------------------------------------------------ registrations
    def register(
        self,
        owner: Any,
        technique: str,
        per_class: int | None = None,
        units: Sequence[str] = (),
        maps: Sequence[str] = (),
    ) -> None:
        """Record (at ``setup``) ``owner``'s technique and the layers of the fixed set of ``per_class`` it reads,
        replacing what it registered before. ``owner`` takes part in the shared pass while its ``enabled`` holds."""
        self._registered[owner] = Registration(technique, per_class, tuple(units), tuple(maps))

    def unregister(self, owner: Any) -> None:
        self._registered.pop(owner, None)

    def techniques(self) -> list[str]:
        """The registered techniques, in registration order, each once."""
        return list(dict.fromkeys(r.technique for r in self._registered.values()))

    def shared_layers(self, per_class: int) -> tuple[list[str], list[str]]:
        """``(unit layers, map layers)`` registered on the fixed set of ``per_class`` by enabled callbacks, each
        once: what one pass (or one ``EpochCapture``) gathers for all of them."""
        units, maps = [], []
        for owner, reg in list(self._registered.items()):
            if reg.per_class == per_class and getattr(owner, "enabled", True):
                units += reg.units
                maps += reg.maps
        return list(dict.fromkeys(units)), list(dict.fromkeys(maps))

    # ------------------------------------------------------------------------------------------- shared pass
    def start_capture(
        self,
        owner: Any,
        trainer: pl.Trainer,
        net: nn.Module,
        step: int,
        per_class: int,
        fixed_idx: Tensor,
        labels: Tensor,
    ) -> None:
        """Set up this epoch's ``EpochCapture`` of the fixed set of ``per_class`` (validation indices ``fixed_idx``,
        ``labels``), once for every callback that reads it, where the validation batches are the validation
        samples in order; ``owner`` (the first to ask) then ``feed``s it the batches."""
        facts = data_facts(trainer, getattr(trainer, "lightning_module", None))
        size = sequential_batch_size(trainer, facts)
        key = pass_key(trainer, step, net, len(labels), facts)
        shared = self.passes.setdefault(per_class, SharedPass())
        if size is None or shared.key == key or (shared.capture is not None and shared.capture.key == key):
            return
        units, maps = self.shared_layers(per_class)
        stats = ActivationStats(units, maps, len(labels), facts.num_classes, facts.shown_classes())
        shared.capture = EpochCapture(net, stats, fixed_idx, labels, len(facts.labels()), size, key)
        self._feeders[owner] = shared.capture

    def feed(self, owner: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """A validation batch, for the capture ``owner`` started (a no-op for any other caller)."""
        capture = self._feeders.get(owner)
        if capture is not None:
            if dataloader_idx == 0:
                capture.add(batch, batch_idx)
            else:
                capture.close(failed=True)

    def stop_capture(self, owner: Any) -> None:
        """The validation epoch is over (or failed): remove the hooks of the capture ``owner`` started."""
        capture = self._feeders.pop(owner, None)
        if capture is not None:
            capture.close()

    def fixed_set_pass(
        self,
        trainer: pl.Trainer,
        net: nn.Module,
        step: int,
        per_class: int,
        x: Tensor,
        y: Tensor,
        units: Sequence[str],
        maps: Sequence[str],
        num_classes: int,
        shown: Sequence[int],
    ) -> SharedPass:
        """This epoch's statistics of the fixed set ``(x, y)`` of ``per_class``, after computing in one
        ``activation_pass`` whatever ``units`` and ``maps`` (and every registered layer of that set) it lacks; the
        epoch's capture, if it saw the whole set, fills it first."""
        key = pass_key(trainer, step, net, len(x), data_facts(trainer, getattr(trainer, "lightning_module", None)))
        shared = self.passes.get(per_class)
        if shared is None or shared.key != key:
            capture = shared.capture if shared is not None else None
            shared = self.passes[per_class] = SharedPass(key=key)
            if capture is not None:  # gathered during this epoch's validation loop
                capture.close()
                if capture.key == key and capture.complete():
                    shared.acts.update(capture.stats.units)
                    shared.maps.update(capture.stats.class_means())
        shared_units, shared_maps = self.shared_layers(per_class)
        units = [n for n in dict.fromkeys([*units, *shared_units]) if n not in shared.acts]
        maps = [n for n in dict.fromkeys([*maps, *shared_maps]) if n not in shared.maps]
        if units or maps:
            acts, means = activation_pass(net, x, units, maps, labels=y, num_classes=num_classes, map_classes=shown)
            shared.acts.update(acts)
            shared.maps.update(means)
        return shared

    # ------------------------------------------------------------------------------------- snapshot listeners
    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(tag, step, png, source)`` with every picture published; adding it again changes nothing."""
        if not any(ref() == listener for ref in self._listeners):
            self._listeners.append(_reference(listener))

    def remove_listener(self, listener: Listener) -> None:
        self._listeners = [ref for ref in self._listeners if ref() is not None and ref() != listener]

    def publish(self, tag: str, step: int, png: bytes, source: Source) -> None:
        """Hand a logged picture (its PNG, ``step`` 0-based) to every listener."""
        for ref in list(self._listeners):
            listener = ref()
            if listener is None:
                self._listeners.remove(ref)
            else:
                listener(tag, step, png, source)


_COORDINATORS: weakref.WeakKeyDictionary[Any, Coordinator] = weakref.WeakKeyDictionary()


def coordinator_of(trainer: pl.Trainer) -> Coordinator:
    """The coordinator of ``trainer``, made on first use; it goes with the Trainer."""
    hub = _COORDINATORS.get(trainer)
    if hub is None:
        hub = _COORDINATORS[trainer] = Coordinator()
    return hub
