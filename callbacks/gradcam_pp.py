"""Grad-CAM++ per probe image: ``gradcam_pp/<layer>``, the Grad-CAM picture with Grad-CAM++'s channel weights
(``methods.gradcam_pp``). Off by default (``--gradcam_pp.enabled true``)."""

from __future__ import annotations

from .gradcam import GradCAM
from .methods.gradcam_pp import grad_cam_pp

__all__ = ["GradCAMPlusPlus"]


class GradCAMPlusPlus(GradCAM):
    """Log Grad-CAM++ maps of the probe images, as ``GradCAM`` does (the same arguments; off by default)."""

    technique = "gradcam_pp"
    method = "Grad-CAM++"
    cam = staticmethod(grad_cam_pp)

    def __init__(self, layer: str | None = None, enabled: bool = False, **kwargs) -> None:
        super().__init__(layer=layer, enabled=enabled, **kwargs)
