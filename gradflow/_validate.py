"""Trace-time checks of the data and options shared by the flow and descent entry points."""

import jax.numpy as jnp
import numpy as np

from ._misc import all_concrete, check_finite, is_traced
from ._network import TwoLayerNet


# Below this init scale the products a_k·σ(w_k·x) (of size scale²) underflow float32's
# smallest normal number (1.2e-38) with a margin of 1e3 for sums and the activation.
_FLOAT32_MIN_SCALE = float(np.sqrt(np.finfo(np.float32).tiny) * 1e3)


def check_problem(net, x, y, weights):
    """Checks shapes, dtypes and finiteness; returns `(x, y, weights)` as arrays."""
    if not isinstance(net, TwoLayerNet):
        raise TypeError(f"`net` must be a `gradflow.TwoLayerNet`, got {type(net).__name__}.")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 2:
        raise ValueError(
            f"`x` must have shape (n, d), got shape {x.shape}. For 1-D inputs use "
            "`x[:, None]`; for a bias coordinate append a column of ones."
        )
    if x.shape[1] != net.dim:
        raise ValueError(
            f"`x` has {x.shape[1]} features but the network's `W` expects d = {net.dim}."
        )
    check_targets(net, x.shape[0], y.shape)
    if weights is not None:
        weights = jnp.asarray(weights)
        if weights.shape != (x.shape[0],):
            raise ValueError(
                f"`weights` must have shape (n,) = ({x.shape[0]},), one per sample, got "
                f"{weights.shape}."
            )
    arrays = {"x": x, "y": y, "net": net.a} | ({} if weights is None else {"weights": weights})
    dtypes = {name: a.dtype for name, a in arrays.items()}
    if len(set(dtypes.values())) != 1:
        raise TypeError(
            "`net`, `x`, `y` (and `weights`) must share one floating dtype, got "
            + ", ".join(f"{k}: {v}" for k, v in dtypes.items())
            + ". gradflow never mixes precisions silently: cast them, e.g. "
            "`x.astype(jnp.float64)`."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`x` must be floating point, got {x.dtype}.")
    for name in ("x", "y", "weights"):
        check_finite(name, arrays.get(name))
    check_finite("net", net.a)
    check_finite("net", net.W)
    check_finite("net", net.b)
    if weights is not None and all_concrete(weights):
        w = np.asarray(weights)
        if np.any(w < 0) or not np.any(w > 0):
            raise ValueError("`weights` must be non-negative with at least one positive entry.")
    check_init_scale(net)
    return x, y, weights


def check_targets(net: TwoLayerNet, n: int, shape: tuple[int, ...]) -> None:
    """Refuses targets whose shape is not `(n,)` + the net's `output_shape`, saying which
    net the targets would fit."""
    expected = (n,) + net.output_shape
    if shape == expected:
        return
    if not net.output_shape:
        hint = (
            " The net has a scalar output (`a` of shape (m,)): pass `y[:, 0]` for a column "
            "of targets, or give `a` shape (m, k) for k outputs (`random_net(..., outputs=k)`)."
            if len(shape) == 2 and shape[0] == n
            else ""
        )
        raise ValueError(f"`y` must have shape (n,) = ({n},) to match `x`, got {shape}.{hint}")
    (k,) = net.output_shape
    raise ValueError(
        f"`y` must have shape (n, k) = ({n}, {k}) to match `x` and the net's k = {k} outputs "
        f"(`a` of shape (m, {k})), got {shape}."
    )


def check_init_scale(net: TwoLayerNet) -> None:
    """Refuses float32 nets (single, or stacked along a leading seed axis) whose scale
    float32 cannot resolve."""
    if net.dtype != jnp.float32 or is_traced(net.a):
        return
    batch = net.W.shape[:-2]
    leaves = [net.a, net.W] + ([] if net.b is None else [net.b])
    theta = np.concatenate([np.asarray(v).reshape(batch + (-1,)) for v in leaves], axis=-1)
    scale = float(np.min(np.sqrt(np.mean(theta**2, axis=-1))))
    if scale < _FLOAT32_MIN_SCALE:
        raise ValueError(
            f"`net` is float32 with init scale {scale:.1e}, which float32 cannot "
            f"resolve (products of weights underflow below {_FLOAT32_MIN_SCALE:.0e}). "
            "Use float64 weights and data (the default of gradflow's constructors)."
        )


def check_times(t1, ts, dtype):
    """Returns `(t1, ts)` as arrays of `dtype`; `ts=None` saves at 0 and `t1`."""
    if t1 is None:
        raise ValueError("`t1` is required: the time to integrate the flow to.")
    if not is_traced(t1) and not (np.isfinite(t1) and t1 > 0):
        raise ValueError(f"`t1` must be positive and finite, got {t1!r}.")
    t1 = jnp.asarray(t1, dtype)
    if ts is None:
        return t1, jnp.stack([jnp.zeros((), dtype), t1])
    ts = jnp.asarray(ts, dtype)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(f"`ts` must be a non-empty 1-D array of times, got shape {ts.shape}.")
    if all_concrete(ts, t1):
        t = np.asarray(ts)
        if not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0):
            raise ValueError("`ts` must be finite and non-decreasing.")
        if t[0] < 0 or t[-1] > float(t1):
            raise ValueError(f"`ts` must lie in [0, t1] = [0, {float(t1)}].")
    return t1, ts
