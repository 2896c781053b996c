from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from ._activation import AbstractActivation
from ._misc import check_positive_int, is_traced
from ._network import TwoLayerNet


Distribution = Literal["gaussian", "sphere"]


def random_net(
    key: PRNGKeyArray,
    *,
    width: int,
    dim: int,
    scale: float | Float[ArrayLike, ""],
    activation: str | AbstractActivation = "relu",
    bias: bool = False,
    distribution: Distribution = "gaussian",
    outputs: int | None = None,
    dtype=jnp.float64,
) -> TwoLayerNet:
    """Draws $\\theta_0 = \\varepsilon\\,\\bar\\theta_0$ with init scale $\\varepsilon$ = `scale`.

    - `distribution="gaussian"`: every entry of $\\bar\\theta_0$ is i.i.d. $N(0, 1)$.
    - `distribution="sphere"`: each neuron's $(w_k, b_k)$ is uniform on the unit sphere
      and $a_k = \\pm 1$ with a random sign (uniform on the unit sphere of
      $\\mathbb{R}^k$ for `outputs=k`), so every neuron starts *balanced* ($C_k = 0$)
      with norm $\\sqrt2\\,\\varepsilon$.

    `outputs=None` gives a scalar output (`a` of shape `(width,)`); `outputs=k` gives
    `a` of shape `(width, k)`, a net with outputs in $\\mathbb{R}^k$ (`outputs=1` is the
    scalar problem with targets of shape `(n, 1)`). The scalar draws are the same with
    and without this option. `scale` may be a traced scalar, so a sweep over init
    scales compiles once.
    """
    check_positive_int("width", width)
    check_positive_int("dim", dim)
    if outputs is not None:
        check_positive_int("outputs", outputs)
    if not is_traced(scale):
        if float(scale) <= 0 or not jnp.isfinite(float(scale)):
            raise ValueError(f"`scale` must be positive and finite, got {scale!r}.")
    if distribution not in ("gaussian", "sphere"):
        raise ValueError(f"`distribution` must be 'gaussian' or 'sphere', got {distribution!r}.")
    scale = jnp.asarray(scale, dtype)
    k_a, k_w = jax.random.split(key)
    rows = jax.random.normal(k_w, (width, dim + bias), dtype)
    if distribution == "gaussian":
        a = jax.random.normal(k_a, (width,) if outputs is None else (width, outputs), dtype)
    else:
        rows = rows / jnp.linalg.norm(rows, axis=1, keepdims=True)
        if outputs is None:
            a = jnp.where(jax.random.bernoulli(k_a, shape=(width,)), 1.0, -1.0).astype(dtype)
        else:
            a = jax.random.normal(k_a, (width, outputs), dtype)
            a = a / jnp.linalg.norm(a, axis=1, keepdims=True)
    W, b = (rows[:, :-1], rows[:, -1]) if bias else (rows, None)
    return TwoLayerNet(a * scale, W * scale, None if b is None else b * scale, activation)


def net_with_imbalance(
    key: PRNGKeyArray,
    imbalance: Float[ArrayLike, " m"],
    *,
    dim: int,
    scale: float | Float[ArrayLike, ""],
    activation: str | AbstractActivation = "relu",
    bias: bool = False,
    outputs: int | None = None,
    dtype=jnp.float64,
) -> TwoLayerNet:
    """A random net whose per-neuron imbalance $\\|a_k\\|^2 - \\|w_k\\|^2 - b_k^2$ equals
    `imbalance` exactly (up to rounding).

    Starts from `random_net(key, ..., distribution="gaussian", outputs=outputs)` and
    rescales one factor per neuron, keeping every direction and sign: where
    $C_k \\ge 0$ the hidden vector $(w_k, b_k)$ is kept and
    $\\|a_k\\| = \\sqrt{C_k + \\|(w_k,b_k)\\|^2}$; where $C_k < 0$, $a_k$ is kept and the
    hidden vector is stretched to norm $\\sqrt{\\|a_k\\|^2 - C_k}$. So `imbalance` of size
    $\\varepsilon^2$ gives a net of size $\\varepsilon$, and only the ratios $C_k/C_1$
    depend on what you prescribe.
    """
    imbalance = jnp.asarray(imbalance, dtype)
    if imbalance.ndim != 1:
        raise ValueError(f"`imbalance` must have shape (m,), got {imbalance.shape}.")
    net = random_net(
        key,
        width=imbalance.shape[0],
        dim=dim,
        scale=scale,
        activation=activation,
        bias=bias,
        outputs=outputs,
        dtype=dtype,
    )
    rows = net.W if net.b is None else jnp.concatenate([net.W, net.b[:, None]], axis=1)
    r2 = jnp.sum(rows**2, axis=1)
    keep_rows = imbalance >= 0
    a_norm = jnp.where(keep_rows, jnp.sqrt(imbalance + r2), _outer_norm(net.a))
    row_norm = jnp.where(keep_rows, jnp.sqrt(r2), jnp.sqrt(_outer_norm_sq(net.a) - imbalance))
    rows = rows * (row_norm / jnp.sqrt(r2))[:, None]
    if outputs is None:
        a = jnp.sign(net.a) * a_norm
    else:
        a = net.a * (a_norm / _outer_norm(net.a))[:, None]
    W, b = (rows[:, :-1], rows[:, -1]) if bias else (rows, None)
    return TwoLayerNet(a, W, b, net.activation)


def _outer_norm_sq(a):
    """$\\|a_k\\|^2$ per neuron, for `a` of shape `(m,)` or `(m, k)`."""
    return a**2 if a.ndim == 1 else jnp.sum(a**2, axis=1)


def _outer_norm(a):
    """$\\|a_k\\|$ per neuron; `abs` for a scalar output, where it is exact."""
    return jnp.abs(a) if a.ndim == 1 else jnp.sqrt(_outer_norm_sq(a))
