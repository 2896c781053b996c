"""Measures of a single-neuron recovery run: generalisation error, end-point class,
escape time, imbalance, growth rate at the origin, tangent rank, thresholds, boundaries.

Pure functions of networks and arrays; `run` applies them to a whole grid."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, Int

import gradflow as gf

from .config import SingleNeuronConfig


# End-point classes beside Q^k = k (k = 1, ..., m).
NOT_RECOVERED = 0
SHARED = -1


def held_out_set(config: SingleNeuronConfig):
    """`(x, weights)`: test inputs (bias coordinate included) and quadrature weights
    summing to 1, fixed per configuration.

    - interval design: `num_test` evenly spaced points on `interval` (a dense grid);
    - Gaussian design, `dim = 1`: Gauss–Hermite quadrature for $s \\sim N(0, 1)$ with
      `min(num_test, 100)` nodes (exact for polynomials of degree < 200);
    - Gaussian design, `dim > 1`: `num_test` Monte Carlo samples drawn with `test_seed`.
    """
    if config.design == "interval":
        lo, hi = config.interval
        s = np.linspace(lo, hi, config.num_test)[:, None]
        w = np.full(config.num_test, 1 / config.num_test)
    elif config.dim == 1:
        nodes, w = np.polynomial.hermite_e.hermegauss(min(config.num_test, 100))
        s, w = nodes[:, None], w / w.sum()
    else:
        s = np.random.default_rng(config.test_seed).standard_normal((config.num_test, config.dim))
        w = np.full(config.num_test, 1 / config.num_test)
    return jnp.asarray(config.inputs(s)), jnp.asarray(w)


def neuron_outputs(net: gf.TwoLayerNet, x: Float[ArrayLike, "n d"]) -> Float[Array, "n m"]:
    """$a_k\\,\\sigma(w_k \\cdot x_i + b_k)$ for every input $i$ and neuron $k$."""
    return net.activation(net.preactivation(x)) * net.a[None, :]


def generalisation_error(
    net: gf.TwoLayerNet,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n"],
    weights: Float[ArrayLike, " n"],
) -> Float[Array, ""]:
    """$\\mathbb{E}_x (f_\\theta(x) - f^*(x))^2$ by the quadrature `(x, weights)` of
    `held_out_set`, with `y` = $f^*(x)$."""
    return jnp.sum(jnp.asarray(weights) * (net(x) - y) ** 2)


def end_point_class(
    net: gf.TwoLayerNet,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n"],
    weights: Float[ArrayLike, " n"],
    *,
    recovery_threshold: float,
    carry_tolerance: float,
) -> tuple[Int[Array, ""], Int[Array, ""]]:
    """Which target set the end point lies on, and how many neurons are active.

    Neuron $k$ is *active* if the RMS of $a_k\\sigma(w_k\\cdot x)$ over the test set
    exceeds `carry_tolerance` times the target's RMS. The class is

    - $k \\ge 1$ (the target set $Q^k$): the target is recovered (generalisation error
      below `recovery_threshold`) and neuron $k$ is the only active neuron, so it alone
      carries $f^*$ and every other neuron is (functionally) dead;
    - `SHARED` ($-1$): recovered, but several neurons carry parts of $f^*$ (for an odd
      $\\sigma$, e.g. $w_1 = \\pm w_2 = \\pm w^*$ with $a_1 \\pm a_2 = a^*$);
    - `NOT_RECOVERED` ($0$): the generalisation error is at or above the threshold.

    **Returns:** `(class, number of active neurons)`.
    """
    weights = jnp.asarray(weights)
    rms = jnp.sqrt(weights @ neuron_outputs(net, x) ** 2)
    active = rms > carry_tolerance * jnp.sqrt(weights @ jnp.asarray(y) ** 2)
    num_active = jnp.sum(active)
    recovered = generalisation_error(net, x, y, weights) < recovery_threshold
    single = jnp.argmax(active) + 1
    code = jnp.where(recovered, jnp.where(num_active == 1, single, SHARED), NOT_RECOVERED)
    return code.astype(jnp.int32), num_active.astype(jnp.int32)


def escape_time(
    ts: Float[ArrayLike, " T"], loss: Float[ArrayLike, "... T"], fraction: float = 0.5
) -> np.ndarray:
    """The first time the loss falls below `fraction` of its initial value `loss[..., 0]`.

    Computed from the saved series: $q = \\log(\\ell(0)/\\ell(t) - 1)$ is interpolated by
    the cubic through the four save times around the first crossing (two on either
    side), whose root in the crossing interval is the answer; where fewer points exist
    or the cubic has no single root there, $\\log\\ell$ linearly between the last point
    above and the first below. NaN where the loss never falls that low (or the series
    is NaN, as after a failed run's stop).

    Under small init the loss sits on a plateau near $\\ell(0)$ for a time
    $\\propto\\log(1/\\varepsilon)$ and then drops within $O(1)$ time, so this is the
    length of the plateau up to an $O(1)$ constant.
    """
    ts = np.asarray(ts, float)
    loss = np.asarray(loss, float)
    flat = loss.reshape(-1, loss.shape[-1])
    out = np.full(flat.shape[0], np.nan)
    for r, series in enumerate(flat):
        out[r] = _first_crossing(ts, series, fraction)
    return out.reshape(loss.shape[:-1])


def _first_crossing(ts, loss, fraction) -> float:
    below = np.nonzero(loss < fraction * loss[0])[0]
    if not len(below) or below[0] == 0:
        return np.nan
    j = below[0]
    # q = log(ℓ(0)/ℓ(t) − 1) grows linearly in t on the plateau (ℓ(0) − ℓ ∝ e^{2λt})
    # and again once the loss converges exponentially, with a smooth bend between: a
    # cubic in t fits it well even where ℓ itself drops within one save interval.
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.log(loss[0] / loss - 1)
    level = np.log(1 / fraction - 1)
    lo, hi = ts[j - 1], ts[j]
    window = np.arange(j - 2, j + 2)
    if window[0] >= 1 and window[-1] < len(ts) and np.all(np.isfinite(q[window])):
        # Centred and scaled time, so the fit is well conditioned.
        centre, half = (lo + hi) / 2, (hi - lo) / 2
        roots = np.roots(np.polyfit((ts[window] - centre) / half, q[window] - level, 3))
        roots = roots[(np.abs(roots.imag) < 1e-9) & (np.abs(roots.real) <= 1)].real
        if len(roots) == 1:
            return float(centre + half * roots[0])
    with np.errstate(divide="ignore"):
        log_loss = np.log(loss[j - 1 : j + 1])
    step = (np.log(fraction * loss[0]) - log_loss[0]) / (log_loss[1] - log_loss[0])
    return float(lo + step * (hi - lo))


def normalised_imbalance(net: gf.TwoLayerNet) -> Float[Array, "... m"]:
    """$C(\\theta)/\\|C(\\theta)\\|$ with $C_k = a_k^2 - \\|w_k\\|^2$ (stacked nets too)."""
    c = gf.imbalance(net)
    return c / jnp.linalg.norm(c, axis=-1, keepdims=True)


def _slope_at_zero(net: gf.TwoLayerNet) -> Float[Array, ""]:
    return jax.grad(lambda z: net.activation(z))(jnp.zeros((), net.dtype))


def growing_mode(
    net: gf.TwoLayerNet, x: Float[ArrayLike, "n d"], y: Float[ArrayLike, " n"]
) -> Float[Array, "... m"]:
    """Amplitude of each neuron along the unstable mode of the flow linearised at 0.

    Near $\\theta = 0$ (with $\\sigma(0) = 0$, no bias parameter) the flow of
    $\\tfrac12\\sum_i(f_\\theta(x_i) - y_i)^2$ is $\\dot a_k = \\sigma'(0)\\,w_k\\cdot g$,
    $\\dot w_k = \\sigma'(0)\\,a_k g$ with $g = \\sum_i y_i x_i$: each neuron grows at the
    rate $\\lambda = |\\sigma'(0)|\\,\\|g\\|$ along $(1, \\pm\\hat g)/\\sqrt2$, with amplitude
    $\\alpha_k = (a_k \\pm w_k\\cdot\\hat g)/\\sqrt2$ (sign of $\\sigma'(0)$). All neurons grow
    at the same rate, so the ratios $\\alpha_k/\\alpha_l$ at the end of the linear phase
    are those at $t = 0$.
    """
    g = jnp.asarray(y) @ jnp.asarray(x)
    g_hat = g / jnp.linalg.norm(g)
    sign = jnp.sign(_slope_at_zero(net))
    return (net.a + sign * (net.W @ g_hat)) / jnp.sqrt(2.0)


def growth_rate(
    config: SingleNeuronConfig, x: Float[ArrayLike, "n d"], y: Float[ArrayLike, " n"]
) -> float:
    """The largest eigenvalue $\\lambda$ of $-\\nabla^2\\ell(0)$: the rate at which the flow
    linearised at the origin leaves it, $\\theta(t) \\approx e^{\\lambda t}\\,(\\ldots)$.

    Computed numerically (Hessian of the ½·sum loss of a width-1 student at
    $\\theta = 0$, by autodiff), so that it checks the closed form
    $|\\sigma'(0)|\\,\\|\\sum_i y_i x_i\\|$ rather than repeating it. The width does not
    matter: at 0 the Hessian is block diagonal with one identical block per neuron.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    zero = gf.TwoLayerNet(
        jnp.zeros(1, x.dtype), jnp.zeros((1, x.shape[1]), x.dtype), None, config.activation
    )
    return float(np.max(np.linalg.eigvalsh(-np.asarray(_loss_hessian(zero, x, y)))))


@eqx.filter_jit
def _loss_hessian(net, x, y):
    theta, unravel = ravel_pytree(net)
    return jax.hessian(lambda t: gf.squared_loss(unravel(t), x, y, None, "sum"))(theta)


def target_point(config: SingleNeuronConfig) -> gf.TwoLayerNet:
    """A point of the target set $Q^1$: neuron 1 is $(a^*, w^*)$, the others are zero."""
    a = jnp.zeros(config.width).at[0].set(config.target_a)
    W = jnp.zeros((config.width, config.input_dim)).at[0].set(jnp.asarray(config.target_w))
    return gf.TwoLayerNet(a, W, None, config.activation)


def tangent_rank(net: gf.TwoLayerNet, x: Float[ArrayLike, "n d"]) -> int:
    """Rank of the Jacobian $\\partial f_\\theta(x_i)/\\partial\\theta$ (inputs × parameters):
    the dimension of the model's tangent space at $\\theta$, seen through the inputs `x`.

    NumPy's `matrix_rank` threshold (largest singular value × max(shape) × machine
    epsilon). At a point of $Q^k$ the dead neurons' columns are exactly zero
    ($a_j = 0$ and $\\sigma(0) = 0$), so the rank is not a question of tolerance there.
    """
    return int(np.linalg.matrix_rank(np.asarray(_jacobian(net, jnp.asarray(x)))))


@eqx.filter_jit
def _jacobian(net, x):
    theta, unravel = ravel_pytree(net)
    return jax.jacfwd(lambda t: unravel(t)(x))(theta)


def optimistic_sample_size(config: SingleNeuronConfig, *, seed: int = 0) -> int:
    """The optimistic sample size computed from the model alone: the tangent rank at
    `target_point(config)` on generic inputs (more Gaussian inputs than parameters, so
    the inputs do not limit the rank). Below it, the $n$ equations $f_\\theta(x_i) = y_i$
    leave a manifold of interpolants through the target that is larger than the
    target set, so no init can single the target out."""
    net = target_point(config)
    num_params = config.width * (1 + config.input_dim)
    s = np.random.default_rng(seed).standard_normal((num_params + 4, config.dim))
    return tangent_rank(net, jnp.asarray(config.inputs(s)))


def threshold_size(sizes, probability, level: float) -> float:
    """The smallest $n$ of `sizes` from which on (at it and every larger size of the
    grid) `probability` is at least `level`; NaN if there is none."""
    sizes = np.asarray(sizes)
    probability = np.asarray(probability, float)
    order = np.argsort(sizes)
    sizes, probability = sizes[order], probability[order]
    ok = probability >= level
    for i in range(len(sizes)):
        if ok[i:].all():
            return float(sizes[i])
    return float("nan")


def basin_boundaries(ratio, classes, purity: float = 1.0) -> dict:
    """Boundaries of the basins of the two extreme classes along a ratio (e.g.
    $|C_1/C_2|$ or $|\\alpha_1/\\alpha_2|$).

    Sorting runs by `ratio`, the *upper* stretch is the longest run of the largest
    ratios in which the class of the largest ratio has at least `purity` share; the
    upper boundary is the geometric mean of the smallest ratio in the stretch and the
    next smaller ratio. The lower boundary likewise from the smallest ratios. With
    `purity=1` every run above the upper boundary reached the same set. Runs with a
    non-finite ratio or class are ignored.

    **Returns:** `{"upper", "upper_class", "upper_count", "lower", "lower_class",
    "lower_count", "between"}` (`between`: runs strictly between the boundaries).
    """
    ratio = np.asarray(ratio, float)
    classes = np.asarray(classes)
    keep = np.isfinite(ratio) & (ratio > 0)
    ratio, classes = ratio[keep], classes[keep]
    order = np.argsort(ratio)
    r, c = ratio[order], classes[order]
    n = len(r)

    def stretch(r, c):
        top = c[-1]
        share = np.cumsum(c[::-1] == top) / np.arange(1, n + 1)  # share among the top k
        k = int(np.max(np.nonzero(share >= purity)[0])) + 1 if n else 0
        return top, k

    top, k_top = stretch(r, c)
    bottom, k_bottom = stretch(-r[::-1], c[::-1])
    upper = np.sqrt(r[n - k_top] * r[n - k_top - 1]) if k_top < n else r[0]
    lower = np.sqrt(r[k_bottom - 1] * r[k_bottom]) if k_bottom < n else r[-1]
    return dict(
        upper=float(upper),
        upper_class=int(top),
        upper_count=int(k_top),
        lower=float(lower),
        lower_class=int(bottom),
        lower_count=int(k_bottom),
        between=int(max(n - k_top - k_bottom, 0)),
    )


def time_shift_fit(log_inverse_scale, times, groups=None) -> dict:
    """Least-squares fit $t = b_g + s\\,\\log(1/\\varepsilon)$ with one intercept per group
    (e.g. per seed) and a common slope $s$.

    **Returns:** `{"slope", "intercepts" (per group, sorted by group label),
    "residual_rms"}`; $1/s$ is the measured growth rate to compare with `growth_rate`.
    """
    x = np.asarray(log_inverse_scale, float).ravel()
    t = np.asarray(times, float).ravel()
    g = np.zeros_like(x) if groups is None else np.asarray(groups).ravel()
    keep = np.isfinite(x) & np.isfinite(t)
    x, t, g = x[keep], t[keep], g[keep]
    labels = np.unique(g)
    xc, tc = x.copy(), t.copy()
    for label in labels:
        m = g == label
        xc[m] -= x[m].mean()
        tc[m] -= t[m].mean()
    slope = float(np.sum(xc * tc) / np.sum(xc * xc))
    intercepts = np.array([np.mean(t[g == lab] - slope * x[g == lab]) for lab in labels])
    residual = tc - slope * xc
    return dict(
        slope=slope,
        intercepts=intercepts,
        residual_rms=float(np.sqrt(np.mean(residual**2))),
    )


def misplaced_runs(ratio, classes, upper_class: int = 1, lower_class: int = 2) -> dict:
    """How well a ratio separates the end points by the rule of the paper's Fig. 3:
    `upper_class` above a boundary $u$, `lower_class` below a boundary $l \\le u$, the
    target shared ($-1$) between. The boundaries are chosen to misplace the fewest runs
    (a run that did not recover is misplaced wherever it lies).

    **Returns:** `{"misplaced", "total", "lower", "upper"}`, the boundaries as
    geometric means of neighbouring ratios (the extreme ratio where a stretch is
    empty). `misplaced = 0` means the ratio separates the classes exactly.
    """
    ratio = np.asarray(ratio, float)
    classes = np.asarray(classes)
    keep = np.isfinite(ratio) & (ratio > 0)
    order = np.argsort(ratio[keep])
    r, c = ratio[keep][order], classes[keep][order]
    n = len(r)
    if n == 0:
        return dict(misplaced=0, total=0, lower=float("nan"), upper=float("nan"))
    zero = np.zeros(1, int)
    low = np.concatenate([zero, np.cumsum(c == lower_class)])  # among the first i runs
    shared = np.concatenate([zero, np.cumsum(c == SHARED)])
    high = np.concatenate([zero, np.cumsum(c == upper_class)])
    # Runs [0, i) below l, [i, j) between, [j, n) above u: correct
    # low[i] + shared[j] − shared[i] + high[n] − high[j]; best i ≤ j by a running max.
    lead = low - shared
    running, arg = -np.inf, 0
    best_i = np.zeros(n + 1, int)
    for j in range(n + 1):
        if lead[j] > running:
            running, arg = lead[j], j
        best_i[j] = arg
    correct = lead[best_i] + shared + high[n] - high
    j = int(np.argmax(correct))
    i = int(best_i[j])

    def cut(k):
        if k == 0:
            return float(r[0])
        if k == n:
            return float(r[-1])
        return float(np.sqrt(r[k - 1] * r[k]))

    return dict(misplaced=int(n - correct[j]), total=int(n), lower=cut(i), upper=cut(j))


def onset_of_class(ratio, classes, top_class: int = 1) -> dict:
    """Where a scan of increasing ratios enters the basin of `top_class` for good: the
    boundary between the last ratio of another class and the first of the stretch of
    `top_class` that runs to the end of the scan (geometric mean), with the scan's
    resolution there (half the log step, as a factor) and the classes met below.
    NaN if the largest ratio is not of `top_class`."""
    ratio = np.asarray(ratio, float)
    classes = np.asarray(classes)
    order = np.argsort(ratio)
    r, c = ratio[order], classes[order]
    below = {int(v): int(k) for v, k in zip(*np.unique(c, return_counts=True))}
    if c[-1] != top_class:
        return dict(boundary=float("nan"), resolution=float("nan"), classes=below)
    other = np.nonzero(c != top_class)[0]
    if not len(other):
        return dict(boundary=float(r[0]), resolution=float("nan"), classes=below)
    k = int(other[-1])
    below = {int(v): int(m) for v, m in zip(*np.unique(c[: k + 1], return_counts=True))}
    return dict(
        boundary=float(np.sqrt(r[k] * r[k + 1])),
        resolution=float(np.sqrt(r[k + 1] / r[k])),
        classes=below,
    )
