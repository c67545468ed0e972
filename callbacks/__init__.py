"""Visualization callbacks: one module per technique, each with its pure function(s) and a thin Callback."""

from callbacks.actmax import ActMaxCallback
from callbacks.deconv import DeconvCallback
from callbacks.fc_activations import FCActivationsCallback
from callbacks.feature_maps import FeatureMapsCallback
from callbacks.filters import FiltersCallback
from callbacks.selectivity import SelectivityCallback

# Config key -> callback class: each is always present in the CLI (turn one off with --<key>.enabled false).
VISUALIZATIONS = {
    "filters": FiltersCallback,
    "feature_maps": FeatureMapsCallback,
    "fc_activations": FCActivationsCallback,
    "actmax": ActMaxCallback,
    "deconv": DeconvCallback,
    "selectivity": SelectivityCallback,
}

__all__ = [cls.__name__ for cls in VISUALIZATIONS.values()] + ["VISUALIZATIONS"]
