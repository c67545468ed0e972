"""convscope: watch a CNN's internal representations evolve while it trains (PyTorch Lightning + TensorBoard).

    from convscope import FeatureMapsCallback, ActMaxCallback, VISUALIZATIONS
    trainer = Trainer(callbacks=[cls() for cls in VISUALIZATIONS.values()], logger=TensorBoardLogger("logs"))

    from convscope import maximize_activation          # the methods alone: plain PyTorch, Lightning not imported
    trainer = Trainer(callbacks=[..., Drawing("background")])   # pictures drawn by a process beside training

The callbacks (one module each) are thin: they schedule, fetch the validation images and log. The methods behind
them live in ``convscope.methods`` (a model and tensors in, tensors out). Names are imported on first use, so
importing a method never imports Lightning.
"""

from __future__ import annotations

import importlib

# The package's version (pyproject.toml reads it from here; CHANGELOG.md says what each one changed).
__version__ = "0.1.0"

# Config key -> (module, callback class), in drawing order; each is a key of the CLI (turn one off with
# --<key>.enabled false).
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
    "embedding": ("embedding", "EmbeddingCallback"),
    # Zeiler & Fergus invariance and what changed since the last drawn epoch
    "invariance": ("invariance", "InvarianceCallback"),
    "changes": ("changes", "ChangesCallback"),
    # last: it stacks what the others drew
    "evolution": ("evolution", "EvolutionCallback"),
}
# The methods (no Lightning): name -> module under convscope.methods.
_METHODS = {
    "maximize_activation": "actmax",
    "unit_activation": "actmax",
    "deconvnet": "deconv",
    "deconvnet_with_channels": "deconv",
    "deconvnet_from_seed": "deconv",
    "feature_maps": "feature_maps",
    "class_mean_maps": "feature_maps",
    "class_means": "selectivity",
    "selectivity_index": "selectivity",
    "occlusion_sensitivity": "occlusion",
    "sensitivity_map": "occlusion",
    "ablation_importance": "importance",
    "variance_importance": "importance",
    "invariance_sweeps": "invariance",
    "transform": "invariance",
    "unit_snapshot": "changes",
    "compare_snapshots": "changes",
    "receptive_field": "top_activations",
    "rf_box": "top_activations",
    "projected_patches": "top_activations",
    "decision_pipeline": "decision",
    "strongest_maps": "decision",
    "confusion_matrix": "confusion",
    "sub_confusion": "confusion",
    "layer_class_responses": "layer_responses",
    "class_effect_sizes": "layer_responses",
    "dead_units": "activations",
    "dead_fraction": "activations",
    "first_layer": "filters",
    "filter_tiles": "filters",
    "grad_cam": "gradcam",
}
_OTHER = {
    "capture_activations": "hooks",
    "LayerError": "hooks",
    "VisualizationCallback": "base",
    "FixedSetCallback": "base",
    "ShownClasses": "classes",
    "Drawing": "drawing",
    "Drawer": "drawing",
}

__all__ = ["__version__", "VISUALIZATIONS", *(cls for _, cls in _CALLBACKS.values()), *_METHODS, *_OTHER]


def _visualizations() -> dict:
    return {key: getattr(importlib.import_module(f"{__name__}.{mod}"), cls) for key, (mod, cls) in _CALLBACKS.items()}


def __getattr__(name: str):
    if name == "VISUALIZATIONS":
        value = _visualizations()
    elif name in _METHODS:
        value = getattr(importlib.import_module(f"{__name__}.methods.{_METHODS[name]}"), name)
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
