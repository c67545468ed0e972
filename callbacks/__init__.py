"""Visualization and analysis callbacks: one module per technique, each with its pure function(s) and a thin
Callback."""

from callbacks.actmax import ActMaxCallback
from callbacks.activations import ActivationsCallback
from callbacks.confusion import ConfusionMatrixCallback
from callbacks.decision import DecisionCallback
from callbacks.deconv import DeconvCallback
from callbacks.embedding import EmbeddingCallback
from callbacks.evolution import EvolutionCallback
from callbacks.fc_activations import FCActivationsCallback
from callbacks.feature_maps import FeatureMapsCallback
from callbacks.filters import FiltersCallback
from callbacks.importance import ImportanceCallback
from callbacks.layer_responses import LayerResponsesCallback
from callbacks.occlusion import OcclusionCallback
from callbacks.samples import SamplesCallback
from callbacks.selectivity import SelectivityCallback
from callbacks.top_activations import TopActivationsCallback

# Config key -> callback class: each is always present in the CLI (turn one off with --<key>.enabled false).
VISUALIZATIONS = {
    # the visualizations
    "filters": FiltersCallback,
    "feature_maps": FeatureMapsCallback,
    "fc_activations": FCActivationsCallback,
    "actmax": ActMaxCallback,
    "deconv": DeconvCallback,
    "selectivity": SelectivityCallback,
    # the neuron analyses
    "samples": SamplesCallback,
    "layer_responses": LayerResponsesCallback,
    "decision": DecisionCallback,
    "top_activations": TopActivationsCallback,
    "importance": ImportanceCallback,
    "activations": ActivationsCallback,
    "confusion_matrix": ConfusionMatrixCallback,
    "occlusion": OcclusionCallback,
    "embedding": EmbeddingCallback,
    # last: it stacks what the others drew
    "evolution": EvolutionCallback,
}

__all__ = [cls.__name__ for cls in VISUALIZATIONS.values()] + ["VISUALIZATIONS"]
