"""Measures of the adaptive regime on breakplanes $(\\xi_k, \\gamma_k)$: clusters, pins and
loss-surface creases. Plain NumPy on the arrays of a run (its RS coordinates at the save
times, its end state and its event log), so that they apply to any run, and are checked
in the tests on configurations built by hand.

**Breakplanes.** Neuron $k$ of $f(x) = \\sum_k a_k \\varphi(w_k \\cdot x + b_k)$ has the
breakplane $\\{x : \\xi_k \\cdot x = \\gamma_k\\}$ with $\\xi_k = w_k/\\|w_k\\|$ and
$\\gamma_k = -b_k/\\|w_k\\|$ (`gradflow.radon.radon_spline`): where its pre-activation is
zero, the kink of ReLU and leaky ReLU, the zero set of a smooth activation. The breakplane
is *oriented*: $(\\xi, \\gamma)$ and $(-\\xi, -\\gamma)$ are the same set with the active side
swapped, different response functions.
"""

import numpy as np


# ---------------------------------------------------------------------------------------
# Data scale and the distance between breakplanes.
# ---------------------------------------------------------------------------------------


def data_ball(x) -> tuple[np.ndarray, float]:
    """`(centre, radius)`: the data's centroid and the largest distance of a data point
    from it. The unit of every tolerance on breakplanes."""
    x = _points(x)
    centre = x.mean(axis=0)
    radius = float(np.max(np.linalg.norm(x - centre, axis=1)))
    if not radius > 0:
        raise ValueError("`x` must hold at least two distinct points (the data ball is a point).")
    return centre, radius


def breakplane_distance(orientation, offset, centre, radius) -> np.ndarray:
    """The distances $D_{kl}$ between the oriented breakplanes of neurons $k$ and $l$,
    relative to the data scale:

    $$D_{kl} = \\frac{1}{R}\\sup_{\\|x - c\\| \\le R}
        \\big|(\\xi_k \\cdot x - \\gamma_k) - (\\xi_l \\cdot x - \\gamma_l)\\big|
      = \\frac{|(\\xi_k - \\xi_l)\\cdot c - (\\gamma_k - \\gamma_l)|}{R} + \\|\\xi_k - \\xi_l\\|,$$

    the largest difference of the two signed distances over the data ball (centre $c$,
    radius $R$, `data_ball`). It is a metric on oriented breakplanes, invariant to moving
    and scaling the data together with the net; $D_{kl} \\le \\tau$ means the two planes
    are within $\\tau R$ of each other everywhere on the data (two planes through the same
    data point at an angle $\\alpha$: $D \\approx \\alpha$ plus the offset of that point from
    $c$ in units of $R$ times $\\alpha$).

    **Arguments:** `orientation` $(m, d)$ unit rows, `offset` $(m,)$, `centre` $(d,)$,
    `radius` $R > 0$. **Returns:** $(m, m)$."""
    xi = np.asarray(orientation, np.float64)
    gamma = np.asarray(offset, np.float64)
    if xi.ndim != 2 or gamma.shape != xi.shape[:1]:
        raise ValueError(
            f"`orientation` must be (m, d) and `offset` (m,), got {xi.shape} and {gamma.shape}."
        )
    dxi = xi[:, None, :] - xi[None, :, :]
    dgamma = gamma[:, None] - gamma[None, :]
    return np.abs(dxi @ np.asarray(centre, np.float64) - dgamma) / radius + np.linalg.norm(
        dxi, axis=-1
    )


def clusters(orientation, offset, centre, radius, tol, include=None) -> np.ndarray:
    """Cluster labels of the breakplanes: the connected components of the graph whose
    edges join breakplanes with `breakplane_distance` $\\le$ `tol` (single linkage, so a
    cluster is a chain of near neighbours; it does not depend on the neurons' order).

    `include` (bool, $(m,)$): the neurons that take part (default: every neuron with a
    finite breakplane and $\\xi \\ne 0$); the others get label $-1$. Labels are
    $0, 1, \\dots$ in the order of each cluster's first neuron. A single neuron is a
    cluster of size 1 (see `cluster_sizes`)."""
    xi = np.asarray(orientation, np.float64)
    gamma = np.asarray(offset, np.float64)
    valid = np.all(np.isfinite(xi), axis=1) & np.isfinite(gamma) & (np.abs(xi).sum(axis=1) > 0)
    if include is not None:
        valid &= np.asarray(include, bool)
    m = len(gamma)
    labels = np.full(m, -1, np.int64)
    if not valid.any():
        return labels
    close = breakplane_distance(np.where(valid[:, None], xi, 0), np.where(valid, gamma, 0),
                                centre, radius) <= tol  # fmt: skip
    close &= valid[:, None] & valid[None, :]
    next_label = 0
    for k in range(m):
        if not valid[k] or labels[k] >= 0:
            continue
        stack = [k]
        labels[k] = next_label
        while stack:
            j = stack.pop()
            for neighbour in np.flatnonzero(close[j] & (labels < 0)):
                labels[neighbour] = next_label
                stack.append(neighbour)
        next_label += 1
    return labels


def cluster_sizes(labels) -> np.ndarray:
    """Sizes of the clusters `0, 1, ...` of `labels` (−1 excluded)."""
    labels = np.asarray(labels)
    return np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, np.int64)


def cluster_counts(labels) -> dict:
    """`clusters` (clusters of ≥ 2 breakplanes), `largest` (size of the largest cluster,
    1 if none has two), `clustered` (neurons in clusters of ≥ 2), `neurons` (labelled)."""
    sizes = cluster_sizes(labels)
    return dict(
        clusters=int(np.sum(sizes >= 2)),
        largest=int(sizes.max()) if len(sizes) else 0,
        clustered=int(sizes[sizes >= 2].sum()),
        neurons=int(sizes.sum()),
    )


def formation_times(labels_over_time, ts) -> dict:
    """When each cluster of the last labelling formed: for each final cluster $C$ of
    at least two neurons, the first save time $t_s$ from which on all of $C$ share one
    label at every save time (they may be part of a larger cluster in between).

    **Arguments:** `labels_over_time` $(T, m)$ (`clusters` at each save time, rows in
    time order), `ts` $(T,)$. **Returns:** `{final label: time}`."""
    labels = np.asarray(labels_over_time)
    ts = np.asarray(ts)
    final = labels[-1]
    out = {}
    for label in range(int(final.max()) + 1 if (final >= 0).any() else 0):
        members = np.flatnonzero(final == label)
        if len(members) < 2:
            continue
        together = np.all(labels[:, members] == labels[:, members[:1]], axis=1) & (
            labels[:, members[0]] >= 0
        )
        # The last save index at which they were not together, plus one.
        apart = np.flatnonzero(~together)
        out[label] = float(ts[apart[-1] + 1] if len(apart) else ts[0])
    return out


def response_alignment(units, labels) -> dict:
    """The alignment of the response functions within each cluster: the mean over pairs
    $k \\ne l$ of a cluster of the cosine similarity of the units
    $u_k(x) = a_k\\varphi(w_k\\cdot x + b_k)$ on probe points (`units`, $(m, P)$, e.g.
    from `unit_responses`). +1: the neurons add up like one neuron; −1: they cancel;
    a unit that is zero on every probe point counts as 0.

    **Returns:** `{label: mean cosine}` for the clusters of at least two neurons."""
    u = np.asarray(units, np.float64)
    norms = np.linalg.norm(u, axis=1)
    unit = np.where(norms[:, None] > 0, u / np.where(norms > 0, norms, 1)[:, None], 0)
    out = {}
    for label, size in enumerate(cluster_sizes(labels)):
        if size < 2:
            continue
        members = np.flatnonzero(np.asarray(labels) == label)
        cos = unit[members] @ unit[members].T
        out[label] = float((cos.sum() - np.trace(cos)) / (size * (size - 1)))
    return out


def probe_points(x, num: int = 41) -> np.ndarray:
    """Probe points for `unit_responses`: a `num`-point grid on the data ball's diameter
    in 1-D, a `num` × `num` grid restricted to the ball in 2-D, `num`² Gaussian points
    scaled into the ball otherwise (fixed seed)."""
    x = _points(x)
    centre, radius = data_ball(x)
    d = x.shape[1]
    if d == 1:
        return centre + radius * np.linspace(-1, 1, num)[:, None]
    if d == 2:
        s = np.linspace(-1, 1, num)
        grid = np.stack(np.meshgrid(s, s), -1).reshape(-1, 2)
        return centre + radius * grid[np.linalg.norm(grid, axis=1) <= 1]
    g = np.random.default_rng(0).standard_normal((num * num, d))
    g *= np.random.default_rng(1).uniform(0, 1, (num * num, 1)) ** (1 / d) / np.linalg.norm(
        g, axis=1, keepdims=True
    )
    return centre + radius * g


def unit_responses(a, W, b, activation, points) -> np.ndarray:
    """$u_k(x_p) = a_k \\varphi(w_k \\cdot x_p + b_k)$, shape $(m, P)$ (scalar outputs)."""
    import gradflow as gf

    phi = gf.get_activation(activation)
    z = np.asarray(W) @ np.asarray(points).T + np.asarray(b)[:, None]
    return np.asarray(a)[:, None] * np.asarray(phi(z))


def neuron_sizes(a, W, b) -> np.ndarray:
    """$|a_k|\\,\\|(w_k, b_k)\\|$: a neuron's weight in the function (its RS amplitude
    $|c_k|$ times $\\sqrt{1 + \\gamma_k^2}$ for ReLU); `grown` compares it to the largest."""
    wb = np.concatenate([np.asarray(W), np.asarray(b)[..., None]], axis=-1)
    return np.abs(np.asarray(a)) * np.linalg.norm(wb, axis=-1)


def grown(a, W, b, floor) -> np.ndarray:
    """The neurons whose `neuron_sizes` is at least `floor` times the largest."""
    size = neuron_sizes(a, W, b)
    return size >= floor * np.max(size, axis=-1, keepdims=True)


def grown_alignment(a, W, b, activation, x, tol, floor) -> tuple[float, float]:
    """Response alignment of one net at the clusters of its grown neurons: `(mean, lowest)`
    of `response_alignment` over the clusters of at least two `grown` neurons (`floor`),
    the mean weighted by cluster size, on `probe_points(x)`; `(nan, nan)` without such a
    cluster. Neurons that never grew are left out: one can sit dead on the data's edge
    (zero on every probe), and a cluster of those is no evidence either way."""
    import gradflow as gf

    a, W, b = (np.asarray(v, np.float64) for v in (a, W, b))
    rs = gf.radon.radon_spline(gf.TwoLayerNet(a, W, b, activation))
    centre, radius = data_ball(x)
    labels = clusters(np.asarray(rs.orientation), np.asarray(rs.offset), centre, radius, tol,
                      grown(a, W, b, floor))  # fmt: skip
    sizes = cluster_sizes(labels)
    if not len(sizes) or sizes.max() < 2:
        return float("nan"), float("nan")
    align = response_alignment(unit_responses(a, W, b, activation, probe_points(x)), labels)
    weights = np.array([sizes[label] for label in align], np.float64)
    values = np.array(list(align.values()))
    return float(np.sum(weights * values) / weights.sum()), float(values.min())


# ---------------------------------------------------------------------------------------
# Pins.
# ---------------------------------------------------------------------------------------

PIN = 1  # gradflow.EventKind.PIN


def pin_table(events) -> list[dict]:
    """The pins of one run's event log (a `gradflow.EventLog` of one run, or anything with
    its fields as arrays): one dict per pin with `neuron`, `point`, `time_in` and
    `time_out` (NaN: held at the end of the run; durations: `pin_durations`)."""
    kind = np.asarray(events.kind)
    rows = []
    for e in np.flatnonzero(kind == PIN):
        rows.append(
            dict(
                neuron=int(events.neuron[e]),
                point=int(events.point[e]),
                time_in=float(events.time_in[e]),
                time_out=float(events.time_out[e]),
            )
        )
    return rows


def pins_at(events, t) -> set[tuple[int, int]]:
    """The pins `(neuron, point)` held at time `t` by the event log: pinned at or before
    `t`, released after it (or never). At `t = t_stop` these are the pins the run ends
    with."""
    kind = np.asarray(events.kind)
    t_in = np.asarray(events.time_in)
    t_out = np.asarray(events.time_out)
    held = (kind == PIN) & (t_in <= t) & (np.isnan(t_out) | (t_out > t))
    return {(int(k), int(i)) for k, i in zip(np.asarray(events.neuron)[held],
                                            np.asarray(events.point)[held])}  # fmt: skip


def pins_over_time(events, ts, m: int) -> dict:
    """Pins along the save times `ts` from the event log: `held` $(T,)$ pins held;
    `pinned_neurons` $(T,)$ neurons with at least one pin; `max_points` $(T,)$ most points
    held by one neuron; `gained`, `released` $(T,)$ pins begun / ended up to each time."""
    kind = np.asarray(events.kind)
    t_in = np.asarray(events.time_in)[kind == PIN]
    t_out = np.asarray(events.time_out)[kind == PIN]
    neuron = np.asarray(events.neuron)[kind == PIN]
    ts = np.asarray(ts, np.float64)
    held = (t_in[None, :] <= ts[:, None]) & (np.isnan(t_out) | (t_out[None, :] > ts[:, None]))
    per_neuron = np.zeros((len(ts), m), np.int64)
    for j, k in enumerate(neuron):
        per_neuron[:, k] += held[:, j]
    return dict(
        held=held.sum(axis=1),
        pinned_neurons=(per_neuron > 0).sum(axis=1),
        max_points=per_neuron.max(axis=1) if m else np.zeros(len(ts), np.int64),
        gained=(t_in[None, :] <= ts[:, None]).sum(axis=1),
        released=(~np.isnan(t_out) & (t_out[None, :] <= ts[:, None])).sum(axis=1),
    )


def pin_durations(events, t_stop) -> np.ndarray:
    """How long each pin of the log was held (to `t_stop` for pins held at the end)."""
    kind = np.asarray(events.kind)
    t_in = np.asarray(events.time_in)[kind == PIN]
    t_out = np.asarray(events.time_out)[kind == PIN]
    return np.where(np.isnan(t_out), t_stop, t_out) - t_in


def pins_from_state(W, b, x, activation="relu", tol: float = 1e-9) -> set[tuple[int, int]]:
    """The pairs `(neuron, point)` whose pre-activation sits on a kink $c$ of `activation`
    at this state: $|w_k \\cdot x_i + b_k - c| \\le$ `tol`
    $\\cdot \\|(w_k, b_k)\\|\\,\\|(x_i, 1)\\|$ (`tol` at rounding level: the exact flow keeps
    a pinned pre-activation on its kink to rounding; a breakplane that merely passes near
    a point is farther by many orders). For a smooth activation: the zero set through a
    data point.

    A *dead* neuron is left out: one whose activation is flat below its kinks (ReLU) and
    that has no data point above them. It no longer moves, so its breakplane stays
    wherever its last crossing left it, possibly on a data point to rounding, without
    being held there (the exact flow logs that event as a crossing)."""
    import gradflow as gf

    phi = gf.get_activation(activation)
    kinks = tuple(phi.kinks) or (0.0,)
    W = np.asarray(W, np.float64)
    b = np.asarray(b, np.float64)
    x = _points(x)
    z = W @ x.T + b[:, None]
    scale = (
        np.linalg.norm(np.c_[W, b], axis=1)[:, None]
        * np.linalg.norm(np.c_[x, np.ones(len(x))], axis=1)[None, :]
    )
    on = np.zeros(z.shape, bool)
    for c in kinks:
        on |= np.abs(z - c) <= tol * scale
    if phi.kinks:
        below = float(jax_derivative(phi, min(kinks) - 1.0))
        if below == 0.0:
            dead = np.all(z <= min(kinks) + tol * scale, axis=1)
            on &= ~dead[:, None]
    return {(int(k), int(i)) for k, i in zip(*np.nonzero(on))}


def jax_derivative(phi, z: float) -> float:
    """$\\varphi'(z)$ of a gradflow activation at one point."""
    import jax

    return float(jax.grad(lambda v: phi(v))(float(z)))


def point_distances(orientation, offset, x) -> np.ndarray:
    """$|\\xi_k \\cdot x_i - \\gamma_k|$, the distance of data point $i$ from breakplane
    $k$, shape $(..., m, n)$ for `orientation` $(..., m, d)$, `offset` $(..., m)$."""
    xi = np.asarray(orientation, np.float64)
    return np.abs(xi @ _points(x).T - np.asarray(offset, np.float64)[..., None])


# ---------------------------------------------------------------------------------------
# Creases of the loss along a line in parameter space.
# ---------------------------------------------------------------------------------------

VALLEY, RIDGE, CREASE = "valley", "ridge", "crease"


def crease_kind(slope_below: float, slope_above: float) -> str:
    """What a kink of a 1-D loss slice is, from its one-sided slopes (the derivative just
    below and just above it along the slice): a **valley** ($-$ then $+$: a minimum of the
    slice, the flow is drawn into it from both sides, a pin), a **ridge** ($+$ then $-$:
    a maximum, repelling on both sides) or a pass-through **crease** (the same sign on
    both sides: the flow crosses)."""
    if slope_below < 0 < slope_above:
        return VALLEY
    if slope_below > 0 > slope_above:
        return RIDGE
    return CREASE


def _points(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"`x` must be (n, d) points, got shape {x.shape}.")
    return x
