"""convscope: watch a CNN's internal representations evolve while it trains (PyTorch Lightning + TensorBoard).

    from convscope import Convscope, ActMax, GradCAM
    trainer = Trainer(callbacks=[Convscope([ActMax(layers=["conv_1"]), GradCAM()])], logger=TensorBoardLogger("logs"))
    trainer = Trainer(callbacks=[Convscope()])            # every technique at its defaults
    trainer = Trainer(callbacks=[Convscope(drawing="background")])   # pictures drawn by a process beside training

    from convscope.methods.actmax import maximize_activation   # the methods alone: plain PyTorch, no Lightning

``Convscope`` (``callbacks.scope``) is the one Lightning callback: it schedules, chooses the fixed images, runs the
shared pass, writes and decides where pictures are drawn. Each technique is a plain object (``callbacks.technique``)
in a module of its own; the methods behind them live in ``convscope.methods`` (a model and tensors in, tensors
out). Names are imported on first use. The 0.1.0 callbacks (``ActMaxCallback``, ..., ``Drawing``) still work for
one release, with a deprecation warning.
"""

from __future__ import annotations

import importlib

# The package's version (pyproject.toml reads it from here; CHANGELOG.md says what each one changed).
__version__ = "0.1.0"

# Config key -> (module, deprecated 0.1.0 callback), in drawing order; each is a key of the CLI (turn one off with
# --<key>.enabled false). The technique's class is ``_TECHNIQUES[key]`` in the same module.
_CALLBACKS = {
    # the visualizations
    "filters": ("filters", "FiltersCallback"),
    "feature_maps": ("feature_maps", "FeatureMapsCallback"),
    "fc_activations": ("fc_activations", "FCActivationsCallback"),
    "actmax": ("actmax", "ActMaxCallback"),
    "deconv": ("deconv", "DeconvCallback"),
    "selectivity": ("selectivity", "SelectivityCallback"),
    # the neuron analyses
    "samples": ("samples", "SamplesCallback"),
    "layer_responses": ("layer_responses", "LayerResponsesCallback"),
    "decision": ("decision", "DecisionCallback"),
    "top_activations": ("top_activations", "TopActivationsCallback"),
    "importance": ("importance", "ImportanceCallback"),
    "activations": ("activations", "ActivationsCallback"),
    "confusion_matrix": ("confusion", "ConfusionMatrixCallback"),
    "occlusion": ("occlusion", "OcclusionCallback"),
    "gradcam": ("gradcam", "GradCAMCallback"),
    "gradcam_pp": ("gradcam_pp", None),  # new in 0.2.0: no 0.1.0 callback
    "embedding": ("embedding", "EmbeddingCallback"),
    # Zeiler & Fergus invariance and what changed since the last drawn epoch
    "invariance": ("invariance", "InvarianceCallback"),
    "changes": ("changes", "ChangesCallback"),
    # the unit browser's data (files beside the event file, no pictures in it)
    "units": ("units", "UnitsCallback"),
    # last: it stacks what the others drew
    "evolution": ("evolution", "EvolutionCallback"),
}
_TECHNIQUES = {
    "filters": "Filters",
    "feature_maps": "FeatureMaps",
    "fc_activations": "FCActivations",
    "actmax": "ActMax",
    "deconv": "Deconv",
    "selectivity": "Selectivity",
    "samples": "Samples",
    "layer_responses": "LayerResponses",
    "decision": "Decision",
    "top_activations": "TopActivations",
    "importance": "Importance",
    "activations": "Activations",
    "confusion_matrix": "ConfusionMatrix",
    "occlusion": "Occlusion",
    "gradcam": "GradCAM",
    "gradcam_pp": "GradCAMPlusPlus",
    "embedding": "Embedding",
    "invariance": "Invariance",
    "changes": "Changes",
    "units": "Units",
    "evolution": "Evolution",
}
_OTHER = {
    "Convscope": "scope",
    "Scope": "scope",
    "Technique": "technique",
    "FixedSetTechnique": "technique",
    "RenderContext": "technique",
    "LayerError": "hooks",
    "VisualizationCallback": "base",
    "ShownClasses": "classes",
    "Drawing": "drawing",
    "Drawer": "drawing",
}

__all__ = [
    "__version__",
    "TECHNIQUES",
    "VISUALIZATIONS",
    *_TECHNIQUES.values(),
    *(cls for _, cls in _CALLBACKS.values() if cls),
    *_OTHER,
]


def _visualizations() -> dict:
    """Deprecated: key -> the 0.1.0 callback."""
    return {
        key: getattr(importlib.import_module(f"{__name__}.{mod}"), cls) for key, (mod, cls) in _CALLBACKS.items() if cls
    }


def _techniques() -> dict:
    """Key -> technique class, in drawing order."""
    return {
        key: getattr(importlib.import_module(f"{__name__}.{mod}"), _TECHNIQUES[key])
        for key, (mod, _) in _CALLBACKS.items()
    }


def __getattr__(name: str):
    if name == "VISUALIZATIONS":
        value = _visualizations()
    elif name == "TECHNIQUES":
        value = _techniques()
    elif name in _TECHNIQUES.values():
        key = next(k for k, v in _TECHNIQUES.items() if v == name)
        value = getattr(importlib.import_module(f"{__name__}.{_CALLBACKS[key][0]}"), name)
    elif name in _OTHER:
        value = getattr(importlib.import_module(f"{__name__}.{_OTHER[name]}"), name)
    else:
        found = [cls for mod, cls in _CALLBACKS.values() if cls == name]
        if not found:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        mod = next(mod for mod, cls in _CALLBACKS.values() if cls == name)
        value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
