from typing import Literal

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._custom_types import Inputs, Targets, Weights
from ._misc import check_reduction
from ._network import TwoLayerNet


Reduction = Literal["mean", "sum"]


def squared_loss(
    net: TwoLayerNet,
    x: Inputs,
    y: Targets,
    weights: Weights | None = None,
    reduction: Reduction = "mean",
) -> Float[Array, ""]:
    """Squared loss $L(\\theta) = \\tfrac12 \\sum_i w_i \\|f_\\theta(x_i) - y_i\\|^2 / Z$.

    `reduction="mean"` takes $Z = \\sum_i w_i$ (so $\\tfrac12$·mean when all weights
    are one); `reduction="sum"` takes $Z = 1$, the convention of Zhao, Bai & Zhang.
    A weight of zero removes a sample exactly, which is how padded data are masked.
    For a net with $k$ outputs, `y` has shape `(n, k)` and the norm sums the output
    coordinates; $Z$ still counts samples, not coordinates.
    """
    check_reduction(reduction)
    prediction = net(x)
    if jnp.shape(y) != prediction.shape:
        raise ValueError(
            f"`y` must have the shape of the net's outputs at `x`, {prediction.shape}, "
            f"got {jnp.shape(y)}."
        )
    residual = prediction - y
    if weights is None:
        total = jnp.sum(residual**2)
        norm = residual.shape[0]
    else:
        # One weight per sample, shared by its output coordinates.
        per_entry = weights if residual.ndim == 1 else weights[:, None]
        total = jnp.sum(per_entry * residual**2)
        norm = jnp.sum(weights)
    return 0.5 * total if reduction == "sum" else 0.5 * total / norm
