"""Attribution: which input pixels a class score depends on.

- :func:`compute_saliency_maps` (Simonyan et al. 2013) and
  :func:`smoothgrad_saliency_maps` (Smilkov et al. 2017), in :mod:`~gradvis.attribution.saliency`.
"""
from .saliency import compute_saliency_maps, smoothgrad_saliency_maps

__all__ = ["compute_saliency_maps", "smoothgrad_saliency_maps"]
