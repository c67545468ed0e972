"""convscope's TensorBoard plugin (the unit browser), registered through the ``tensorboard_plugins`` entry point.

Imports only the standard library, werkzeug and tensorboard, so loading it never imports torch.
"""

from .plugin import ConvscopePlugin, life_line

__all__ = ["ConvscopePlugin", "life_line"]
