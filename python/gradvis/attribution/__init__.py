"""Attribution: which input values or feature-map positions a class score depends on.

Arguments shared by every method: ``X`` (N, C, H, W) in the model's input space;
``target`` an int, an (N,) array, a class name of the model, or None for the
predicted class; ``model`` any :class:`gradvis.Model`. Pixel methods return an
array shaped like X (float32 stays float32); CAMs return (N, h, w) at the
layer's resolution or (N, H, W) with ``upsample=True``. Nothing is normalized.
Memory is bounded by ``internal_batch_size`` (rows per pass; the default comes
from the model's activation size, :func:`default_batch_size`).

- :mod:`~gradvis.attribution.saliency_maps`: the CS231n saliency map and SmoothGrad.
- :mod:`~gradvis.attribution.gradients`: :func:`saliency`, :func:`input_x_gradient`,
  :func:`guided_backprop`, :func:`deconvolution`, :func:`noise_tunnel`,
  :func:`gradient_shap` (Captum's semantics).
- :mod:`~gradvis.attribution.integrated`: :func:`integrated_gradients`.
- :mod:`~gradvis.attribution.deeplift`: :func:`deeplift` (rescale rule).
- :mod:`~gradvis.attribution.cam`: :func:`grad_cam`, :func:`guided_grad_cam` (Captum's),
  :func:`grad_cam_plus_plus`, :func:`xgrad_cam`, :func:`layer_cam`, :func:`hires_cam`,
  :func:`eigen_cam`, :func:`score_cam`, :func:`ablation_cam` (pytorch-grad-cam's).
- :mod:`~gradvis.attribution.perturbation`: :func:`occlusion`.
- :mod:`~gradvis.attribution.metrics`: :func:`infidelity`, :func:`sensitivity_max`,
  :func:`deletion_curve`, :func:`insertion_curve`, :func:`sanity_check`.
"""
from .saliency_maps import compute_saliency_maps, smoothgrad_saliency_maps
from ._common import default_batch_size, default_cam_layer, spatial_layers
from .cam import (CAM_METHODS, ablation_cam, eigen_cam, grad_cam, grad_cam_plus_plus, guided_grad_cam,
                  hires_cam, layer_cam, score_cam, xgrad_cam)
from .deeplift import deeplift
from .gradients import (PIXEL_METHODS, deconvolution, gradient_shap, guided_backprop, input_x_gradient,
                        noise_tunnel, saliency)
from .integrated import IG_METHODS, integrated_gradients
from .metrics import (deletion_curve, edge_detector, infidelity, insertion_curve, sanity_check,
                      sensitivity_max)
from .perturbation import occlusion

PIXEL_METHODS.update({
    "saliency": saliency, "input_x_gradient": input_x_gradient, "integrated_gradients": integrated_gradients,
    "guided_backprop": guided_backprop, "deconvolution": deconvolution, "gradient_shap": gradient_shap,
    "deeplift": deeplift,
})

__all__ = [
    "compute_saliency_maps", "smoothgrad_saliency_maps",
    "saliency", "input_x_gradient", "integrated_gradients", "gradient_shap", "noise_tunnel",
    "guided_backprop", "deconvolution", "deeplift", "occlusion",
    "grad_cam", "guided_grad_cam", "grad_cam_plus_plus", "xgrad_cam", "layer_cam", "hires_cam",
    "eigen_cam", "score_cam", "ablation_cam",
    "infidelity", "sensitivity_max", "deletion_curve", "insertion_curve", "sanity_check", "edge_detector",
    "default_batch_size", "default_cam_layer", "spatial_layers",
    "PIXEL_METHODS", "CAM_METHODS", "IG_METHODS",
]
