"""The linear shape model of non-rigid structure from motion, one formula for every method.

A category's 3D shapes are ``X(alpha) = M + sum_i alpha_i B_i``: a mean (or bias) shape ``M``
(K, 3) and ``n`` basis shapes ``B_i`` (n, K, 3) weighted by per-instance coefficients ``alpha``
(Bregler, Hertzmann & Biermann, CVPR 2000; C3DPO, Novotny et al., ICCV 2019). The methods
parametrise ``M`` and ``B`` differently (``autolink3d``'s :class:`ShapeModel` normalises each
basis shape to unit Frobenius norm, the lifters' :class:`~kp3d.nn.lifting.ShapeBasis` to unit
RMS radius, optionally free of camera motion), which changes how they train; the combination
itself is this function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kp3d.geometry.keypoints import check_shape


def linear_shape(mean: Tensor, basis: Tensor, alpha: Tensor) -> Tensor:
    """``mean + sum_i alpha_i basis_i``: coefficients (..., n) -> shapes (..., K, 3).

    Args:
        mean: (K, 3) mean (bias) shape; leading dims broadcast with those of ``alpha``.
        basis: (n, K, 3) basis shapes.
        alpha: (..., n) coefficients.
    """
    dims = check_shape(basis, "n K 3", name="linear_shape: basis")
    check_shape(mean, "... K 3", name="linear_shape: mean", dims=dims)
    check_shape(alpha, "... n", name="linear_shape: alpha", dims=dims)
    return mean + torch.einsum("...n,nkc->...kc", alpha, basis)
