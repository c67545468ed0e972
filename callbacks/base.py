"""Deprecated: the callbacks of convscope 0.1.0, one per technique (``ActMaxCallback``, ...), kept for one release.

Each is its technique (``ActMax``, ...) and a Lightning callback that does one thing: at ``setup``, the first of
them in a Trainer puts one ``Convscope`` owning all of them (and the settings of a ``Drawing`` callback) into the
Trainer, which then draws as it does for ``Trainer(callbacks=[Convscope([ActMax(), ...])])``, the new form.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from .scope import Convscope, net_of, run_dir_of
from .technique import FixedSetTechnique, LayerError, RenderContext, Technique, tag_part

__all__ = ["VisualizationCallback", "legacy_callback", "RenderContext", "tag_part", "LayerError", "FixedSetTechnique"]


class VisualizationCallback(Callback):
    """Deprecated: the adapter part of a 0.1.0 callback (a technique mixed with this by ``legacy_callback``)."""

    net_of = staticmethod(net_of)
    run_dir = staticmethod(run_dir_of)

    def owner(self, trainer: pl.Trainer) -> Convscope:
        """The Trainer's owner of this technique: made at the first adapter's setup from every adapter and the
        ``Drawing`` callback's settings, and added to the Trainer's callbacks (Lightning then runs its hooks)."""
        from .drawing import Drawing

        owners = [cb for cb in trainer.callbacks if isinstance(cb, Convscope)]
        mine = [o for o in owners if any(t is self for t in o.techniques)]
        if mine:
            return mine[0]
        if owners:
            raise ValueError(
                f"{type(self).__name__} beside a Convscope callback: pass the technique to it instead, "
                f"Convscope([..., {self.technique_class.__name__}()])"
            )
        legacy = [cb for cb in trainer.callbacks if isinstance(cb, VisualizationCallback)]
        drawing = next((cb for cb in trainer.callbacks if isinstance(cb, Drawing)), None)
        owner = Convscope(legacy, **(drawing.settings() if drawing is not None else {"drawing": "inline"}))
        if drawing is not None:
            drawing.background = owner.background  # what the Drawing callback reports (resolved, waited, ...)
        trainer.callbacks.append(owner)
        return owner

    @override
    def setup(self, trainer: pl.Trainer | None, pl_module: pl.LightningModule, stage: str) -> None:
        """With a Trainer: join its owner (made here by the first adapter). Without one (a direct call): configure
        for inputs of ``input_shape``, which must then be set."""
        if trainer is not None:
            self.owner(trainer)
            return
        if self.enabled:
            if self.input_shape is None:
                raise ValueError(f"{type(self).__name__}: set input_shape (C, H, W) before setup without a Trainer")
            self.configure_for(net_of(pl_module), self.input_shape)

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int | None = None) -> None:
        """Draw this technique now, through its owner (``step``: the image step, default the owner's)."""
        owner = self.owner(trainer)
        if trainer.is_global_zero:
            owner.scope.begin()
            owner._draw(trainer, pl_module, [self], owner.step_of(trainer, pl_module) if step is None else step)

    def should_render(self, trainer: pl.Trainer) -> bool:
        return any(t is self for t in self.owner(trainer).due(trainer))


def legacy_callback(technique: type[Technique], name: str) -> type:
    """The deprecated 0.1.0 callback ``name`` of ``technique``: the technique itself, usable in
    ``Trainer(callbacks=[...])`` as before, warning once it is made."""

    @functools.wraps(technique.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            f"{name} is deprecated and goes in the next release: pass the technique to the owner callback, "
            f"Trainer(callbacks=[Convscope([{technique.__name__}(...), ...])]) (from convscope import Convscope, "
            f"{technique.__name__})",
            DeprecationWarning,
            stacklevel=2,
        )
        technique.__init__(self, *args, **kwargs)

    technique.legacy_name = name  # its checkpoint key in 0.1.0 (``scope.legacy_key``)
    doc = f"Deprecated: ``Convscope([{technique.__name__}(...)])``.\n\n{technique.__doc__ or ''}"
    return type(
        name,
        (VisualizationCallback, technique),
        {"__init__": __init__, "__doc__": doc, "__module__": technique.__module__, "technique_class": technique},
    )
