"""Measures of the optimization-threshold experiment (Boursier & Flammarion,
arXiv:2410.02348): losses in closed form, the least-squares fit, the direction field
$G_n$ of the early-alignment phase and its extremal directions, neuron clusters, and the
threshold $n^*$ with its bootstrap. NumPy functions of a network's arrays, so they run on
the host after the flows, on single runs or stacked ones.

Conventions: every "loss" here is the mean squared error **without** the ½ of
`gradflow.squared_loss(reduction="mean")`, $\\frac1n\\sum_i (f(x_i) - y_i)^2$, the scale on
which the noise level is $\\sigma^2$ (the paper's convention; the flow itself descends
½·MSE, the same flow at half the speed)."""

import math

import numpy as np


# E‖x‖² / d for the input laws: N(0, I_d) has E[x xᵀ] = I, uniform in the unit ball has
# E[x xᵀ] = I / (d + 2). Every second moment below is the Gaussian one times this factor,
# since both laws are rotation invariant (x = r·s with s uniform on the sphere).
INPUTS = ("gaussian", "ball")


def second_moment(inputs: str, dim: int) -> float:
    """$c$ with $E[x x^\\top] = c\\,I_d$: 1 for `"gaussian"`, $1/(d+2)$ for `"ball"`."""
    if inputs == "gaussian":
        return 1.0
    if inputs == "ball":
        return 1.0 / (dim + 2)
    raise ValueError(f"`inputs` must be one of {INPUTS}, got {inputs!r}.")


def sample_inputs(rng: np.random.Generator, n: int, dim: int, inputs: str):
    """`n` points of $\\mathbb{R}^d$: $N(0, I_d)$ or uniform in the unit ball."""
    second_moment(inputs, dim)  # checks the name
    g = rng.standard_normal((n, dim))
    if inputs == "gaussian":
        return g
    radius = rng.uniform(size=(n, 1)) ** (1.0 / dim)
    return radius * g / np.linalg.norm(g, axis=1, keepdims=True)


def relu_kernel(U, V):
    """$E[\\mathrm{relu}(u\\cdot x)\\,\\mathrm{relu}(v\\cdot x)]$ for $x \\sim N(0, I)$,
    every row $u$ of `U` against every row $v$ of `V` (the arc-cosine kernel of order 1,
    Cho & Saul 2009): $\\frac{\\|u\\|\\|v\\|}{2\\pi}(\\sin\\phi + (\\pi - \\phi)\\cos\\phi)$,
    $\\phi$ the angle between $u$ and $v$. Shapes `(..., m, d)`, `(..., p, d)` →
    `(..., m, p)`."""
    nu = np.linalg.norm(U, axis=-1)[..., :, None]
    nv = np.linalg.norm(V, axis=-1)[..., None, :]
    dot = U @ np.swapaxes(V, -1, -2)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(nu * nv > 0, dot / (nu * nv), 1.0)
    phi = np.arccos(np.clip(cos, -1.0, 1.0))
    return nu * nv / (2 * np.pi) * (np.sin(phi) + (np.pi - phi) * cos)


def function_distance(a, W, beta, *, inputs: str = "gaussian"):
    """$\\|f_\\theta - \\beta\\cdot x\\|_{L^2(P_x)} =
    (E_x[(f_\\theta(x) - \\beta\\cdot x)^2])^{1/2}$ in closed form for a ReLU net without
    bias $f_\\theta(x) = \\sum_j a_j\\,\\mathrm{relu}(w_j\\cdot x)$ and $x \\sim$ `inputs`:
    $a^\\top K a - 2\\sum_j a_j\\,E[\\mathrm{relu}(w_j\\cdot x)\\,x]\\cdot\\beta
    + E[(\\beta\\cdot x)^2]$,
    with $E[\\mathrm{relu}(w\\cdot x)\\,x] = \\tfrac12 E[x x^\\top] w$ (by the symmetry
    $x \\to -x$). Shapes: `a` `(..., m)`, `W` `(..., m, d)`, `beta` `(..., d)`."""
    c = second_moment(inputs, W.shape[-1])
    quad = np.einsum("...i,...ij,...j->...", a, relu_kernel(W, W), a)
    cross = 0.5 * np.einsum("...j,...jd,...d->...", a, W, beta)
    square = c * (quad - 2 * cross + np.sum(beta**2, axis=-1))
    return np.sqrt(np.maximum(square, 0.0))


def ols_fit(x, y):
    """$\\hat\\beta_{\\mathrm{OLS}} = \\arg\\min_\\beta \\sum_i (\\beta\\cdot x_i - y_i)^2$ (no
    intercept: the inputs are symmetric and the teacher linear), minimum-norm where
    $n < d$."""
    return np.linalg.lstsq(x, y, rcond=None)[0]


def train_mse(prediction, y):
    """$\\frac1n\\sum_i (\\hat y_i - y_i)^2$ over the last axis."""
    return np.mean((prediction - y) ** 2, axis=-1)


def relu_net(a, W, x):
    """$f(x) = \\sum_j a_j\\,\\mathrm{relu}(w_j\\cdot x)$ at every row of `x`."""
    return np.einsum("...nm,...m->...n", np.maximum(x @ np.swapaxes(W, -1, -2), 0.0), a)


def is_interpolating(train, noise: float, tol: float):
    """A run interpolates when its training MSE is below `tol`·$\\sigma^2$. A run that
    settles at the least-squares-like local minimum keeps an MSE of about
    $\\sigma^2(1 - d/n)$; `tol` must sit well below that."""
    if not noise > 0:
        raise ValueError(f"`noise` must be positive to judge interpolation, got {noise!r}.")
    return np.asarray(train) < tol * noise**2


def direction_field(w, x, y):
    """$G_n(w) = \\frac1n\\sum_i y_i\\,\\mathbf 1\\{w\\cdot x_i > 0\\}\\,x_i$ for every row of
    `w` `(p, d)` → `(p, d)`: during early alignment a neuron's direction moves along
    $\\operatorname{sign}(a_j)\\,$ the projection of $G_n(w_j)$ on the tangent space."""
    active = (w @ x.T > 0).astype(x.dtype)  # (p, n)
    return (active * y[None, :]) @ x / x.shape[0]


def _sphere_points(rng, num: int, dim: int):
    v = rng.standard_normal((num, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def extremal_directions(
    x,
    y,
    *,
    num_starts: int = 64,
    num_iterations: int = 200,
    grid_points: int = 3600,
    seed: int = 0,
):
    """The maximiser $D_+$ and minimiser $D_-$ of $h(w) = w\\cdot G_n(w)$ over the unit
    sphere, the directions that neurons with $a_j > 0$ (resp. $< 0$) gather at.

    $h(w) = \\frac1n\\sum_i y_i\\,\\mathrm{relu}(w\\cdot x_i)$ is positively homogeneous, its
    gradient is $G_n(w)$, and at a critical point on the sphere $G_n(w) = h(w)\\,w$. In
    $d = 2$: $h$ on `grid_points` angles, the best one refined by golden-section search
    on its grid cell (piecewise $h$ is a sum of cosines, smooth between the data's
    normal angles). In $d > 2$: multi-start fixed-point ascent $w \\leftarrow
    \\pm G_n(w)/\\|G_n(w)\\|$ from `num_starts` random points (+ the OLS direction and its
    negative), `num_iterations` steps each (the map ends in a cycle or a fixed point of
    the finitely many activation patterns); the best end point wins.

    **Returns:** `(D_plus, D_minus, values)` with `values = (h(D_+), h(D_-))`.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, d = x.shape

    def h(w):
        return np.maximum(w @ x.T, 0.0) @ y / n

    if d == 1:
        w = np.array([[1.0], [-1.0]])
        values = h(w)
        i, j = int(np.argmax(values)), int(np.argmin(values))
        return w[i], w[j], np.array([values[i], values[j]])
    if d == 2:
        angles = np.linspace(0.0, 2 * np.pi, grid_points, endpoint=False)
        step = angles[1]

        def at(angle):
            angle = np.atleast_1d(angle)
            return np.stack([np.cos(angle), np.sin(angle)], axis=-1)

        values = h(at(angles))
        found = []
        for sign in (1.0, -1.0):
            best = angles[int(np.argmax(sign * values))]
            lo, hi = best - step, best + step
            ratio = (math.sqrt(5) - 1) / 2
            for _ in range(60):  # golden section: the cell shrinks by 0.618 per step
                c1, c2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
                if sign * h(at(c1))[0] >= sign * h(at(c2))[0]:
                    hi = c2
                else:
                    lo = c1
            found.append(at(0.5 * (lo + hi))[0])
        D_plus, D_minus = found
        return D_plus, D_minus, np.array([h(D_plus[None])[0], h(D_minus[None])[0]])

    rng = np.random.default_rng(seed)
    starts = _sphere_points(rng, num_starts, d)
    ols = ols_fit(x, y)
    if np.linalg.norm(ols) > 0:
        starts = np.concatenate([starts, (ols / np.linalg.norm(ols))[None]])
    found = []
    for sign in (1.0, -1.0):
        w = np.concatenate([starts, -starts])
        best_w, best_value = w, sign * h(w)
        for _ in range(num_iterations):
            g = sign * direction_field(w, x, y)
            norm = np.linalg.norm(g, axis=1, keepdims=True)
            w = np.where(norm > 0, g / np.where(norm > 0, norm, 1.0), w)
            value = sign * h(w)
            better = value > best_value
            best_w = np.where(better[:, None], w, best_w)
            best_value = np.maximum(value, best_value)
        found.append(best_w[int(np.argmax(best_value))])
    D_plus, D_minus = found
    return D_plus, D_minus, np.array([h(D_plus[None])[0], h(D_minus[None])[0]])


def cosines(W, directions):
    """$\\cos\\angle(w_j, u_j)$ for rows `W` `(..., m, d)` and targets `(..., m, d)`
    (or `(..., d)`, broadcast); NaN for a zero row."""
    directions = np.broadcast_to(
        directions[..., None, :] if directions.ndim == W.ndim - 1 else directions, W.shape
    )
    nw = np.linalg.norm(W, axis=-1)
    nu = np.linalg.norm(directions, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(W * directions, axis=-1) / (nw * nu)


def count_clusters(a, W, *, angle_deg: float = 5.0, min_share: float = 1e-3) -> int:
    """The number of neuron clusters of one net: neurons whose weight $|a_j|\\,\\|w_j\\|$ is
    at least `min_share` of the largest are grouped by single linkage, two of them joined
    when $\\operatorname{sign}(a)$ agrees and the angle between their $w$ is at most
    `angle_deg` degrees. Neurons below `min_share` (stalled near the origin, or dead) are
    not counted."""
    weight = np.abs(a) * np.linalg.norm(W, axis=-1)
    if weight.max() <= 0:
        return 0
    keep = np.flatnonzero(weight >= min_share * weight.max())
    u = W[keep] / np.linalg.norm(W[keep], axis=-1, keepdims=True)
    near = (u @ u.T >= math.cos(math.radians(angle_deg))) & (
        np.sign(a[keep])[:, None] == np.sign(a[keep])[None, :]
    )
    label = -np.ones(len(keep), int)
    clusters = 0
    for i in range(len(keep)):
        if label[i] >= 0:
            continue
        stack, label[i] = [i], clusters
        while stack:
            j = stack.pop()
            for k in np.flatnonzero(near[j] & (label < 0)):
                label[k] = clusters
                stack.append(k)
        clusters += 1
    return clusters


def interpolating_fraction_crossing(sizes, fractions, level: float = 0.5) -> float:
    """$n^*$: where the fraction of interpolating runs first falls to `level` or below,
    from the largest size at which it is still above, interpolated linearly in
    $\\log n$ between the two grid sizes. NaN where it never falls that low on the grid;
    the smallest size where every size's fraction is already at or below `level`.
    """
    sizes = np.asarray(sizes, np.float64)
    fractions = np.asarray(fractions, np.float64)
    known = np.isfinite(fractions)  # a size whose every run is undetermined says nothing
    sizes, fractions = sizes[known], fractions[known]
    if sizes.size == 0:
        return float("nan")
    above = np.flatnonzero(fractions > level)
    if above.size == 0:
        return float(sizes[0])
    last = above[-1]
    if last == len(sizes) - 1:
        return float("nan")
    f0, f1 = fractions[last], fractions[last + 1]
    s = (f0 - level) / (f0 - f1)
    return float(np.exp(np.log(sizes[last]) + s * (np.log(sizes[last + 1]) - np.log(sizes[last]))))


def bootstrap_threshold(
    sizes, interpolating, *, level: float = 0.5, num_resamples: int = 1000, seed=0
):
    """$n^*$ of `interpolating` `(sizes, seeds)` (boolean; NaN = unconverged, left out)
    and `num_resamples` bootstrap replicates: the seeds of every size resampled with
    replacement."""
    flags = np.asarray(interpolating, np.float64)
    rng = np.random.default_rng(seed)

    def estimate(f):
        counts = np.sum(np.isfinite(f), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            fractions = np.nansum(f, axis=1) / counts  # NaN where no run is determined
        return interpolating_fraction_crossing(sizes, fractions, level)

    point = estimate(flags)
    replicates = np.empty(num_resamples)
    for r in range(num_resamples):
        pick = rng.integers(0, flags.shape[1], size=flags.shape)
        replicates[r] = estimate(np.take_along_axis(flags, pick, axis=1))
    return point, replicates


def fit_power_law(dims, thresholds, replicates=None) -> dict:
    """Least-squares fit $\\log n^* = \\log c + k \\log d$. With bootstrap replicates
    `(num_dims, R)` of $n^*$, the fit is repeated per replicate (those where every
    dimension has a finite $n^*$) and the spread of $k$ gives its uncertainty."""
    dims = np.asarray(dims, np.float64)
    thresholds = np.asarray(thresholds, np.float64)
    ok = np.isfinite(thresholds) & (thresholds > 0)
    if ok.sum() < 2:
        return dict(exponent=float("nan"), prefactor=float("nan"), dims=[])
    k, logc = np.polyfit(np.log(dims[ok]), np.log(thresholds[ok]), 1)
    out = dict(exponent=float(k), prefactor=float(np.exp(logc)), dims=[int(d) for d in dims[ok]])
    if replicates is not None:
        reps = np.asarray(replicates)[ok]
        good = np.all(np.isfinite(reps) & (reps > 0), axis=0)
        slopes = np.array([np.polyfit(np.log(dims[ok]), np.log(r), 1)[0] for r in reps[:, good].T])
        if slopes.size >= 10:
            out.update(
                exponent_stderr=float(np.std(slopes, ddof=1)),
                exponent_low=float(np.quantile(slopes, 0.025)),
                exponent_high=float(np.quantile(slopes, 0.975)),
                replicates_used=int(slopes.size),
            )
    return out
