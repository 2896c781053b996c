"""Which parameters a flow moves: `gradient_flow(..., trainable=("a",))` trains the outer
layer only (the kernel regime of a frozen random hidden layer), the others stay at their
initial values exactly.

The state keeps every parameter (the layout of `ravel_net`'s $\\theta$ is unchanged, so
ensembles, sweeps, the refilling runner and stored results work as before); a frozen
parameter enters the loss as its initial value behind `jax.lax.stop_gradient`, so its
component of $\\nabla L$ is an exact zero and JAX does not even form it."""

from collections.abc import Sequence

import equinox as eqx
import jax
import numpy as np

from ._network import TwoLayerNet


# The parameters of a `TwoLayerNet`, in the order `ravel_net` lays them out.
PARAMETERS = ("a", "W", "b")


def parameters_of(net: TwoLayerNet) -> tuple[str, ...]:
    """The names of `net`'s parameters: `("a", "W", "b")`, or `("a", "W")` without bias."""
    return PARAMETERS if net.b is not None else PARAMETERS[:2]


def check_trainable(net: TwoLayerNet, trainable: Sequence[str] | None) -> tuple[str, ...]:
    """`trainable` checked against `net` and put in `ravel_net`'s order; `None` means
    every parameter of `net`."""
    present = parameters_of(net)
    if trainable is None:
        return present
    if isinstance(trainable, str):
        # `trainable="a"` would otherwise be read letter by letter.
        trainable = (trainable,)
    names = list(trainable)
    for name in names:
        if not isinstance(name, str) or name not in PARAMETERS:
            raise ValueError(
                f"`trainable` names parameters among {PARAMETERS}, got {name!r}. E.g. "
                "`trainable=('a',)` trains the outer layer only."
            )
        if name not in present:
            raise ValueError(
                f"`trainable` names {name!r}, but the net has no bias (`net.b` is None)."
            )
    if len(set(names)) != len(names):
        raise ValueError(f"`trainable` names a parameter twice: {tuple(names)}.")
    if not names:
        raise ValueError(
            "`trainable` is empty: nothing would move. Name at least one of "
            f"{present}, or leave it at None for all."
        )
    return tuple(name for name in present if name in names)


def frozen_of(net: TwoLayerNet, trainable: tuple[str, ...]) -> tuple[str, ...]:
    """The parameters of `net` that `trainable` leaves at their initial values."""
    return tuple(name for name in parameters_of(net) if name not in trainable)


def trainable_mask(net: TwoLayerNet, trainable: tuple[str, ...]) -> np.ndarray | None:
    """Over `ravel_net(net)`'s $\\theta$: True where the parameter moves; `None` where
    every parameter does."""
    if not frozen_of(net, trainable):
        return None
    sizes = [getattr(net, name).size for name in parameters_of(net)]
    moves = [name in trainable for name in parameters_of(net)]
    return np.repeat(np.array(moves), sizes)


def freeze(net: TwoLayerNet, start: TwoLayerNet, trainable: tuple[str, ...]) -> TwoLayerNet:
    """`net` with its frozen parameters replaced by those of `start`, behind
    `stop_gradient`: the loss of the result has an exactly zero gradient in them."""
    frozen = frozen_of(net, trainable)
    if not frozen:
        return net
    values = [jax.lax.stop_gradient(getattr(start, name)) for name in frozen]
    return eqx.tree_at(lambda n: [getattr(n, name) for name in frozen], net, values)
