"""The methods behind the pictures, in plain PyTorch: a model and tensors in, tensors out; no Lightning import.

Each module is one technique; every one reads activations through ``callbacks.hooks`` (the one activation probe)."""
