from typing import Literal

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._custom_types import Inputs, Targets, Weights
from ._network import TwoLayerNet


Reduction = Literal["mean", "sum"]


def squared_loss(
    net: TwoLayerNet,
    x: Inputs,
    y: Targets,
    weights: Weights | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, ""]:
    """Squared loss $L(\\theta) = \\tfrac12 \\sum_i w_i (f_\\theta(x_i) - y_i)^2 / Z$.

    `reduction="mean"` takes $Z = \\sum_i w_i$ (so $\\tfrac12$·mean when all weights
    are one); `reduction="sum"` takes $Z = 1$, the convention of Zhao, Bai & Zhang.
    A weight of zero removes a sample exactly, which is how padded data are masked.
    """
    residual = net(x) - y
    if weights is None:
        total = jnp.sum(residual**2)
        norm = residual.shape[0]
    else:
        total = jnp.sum(weights * residual**2)
        norm = jnp.sum(weights)
    if reduction == "sum":
        return 0.5 * total
    if reduction == "mean":
        return 0.5 * total / norm
    raise ValueError(f"`reduction` must be 'mean' or 'sum', got {reduction!r}.")
