"""The adaptive-regime experiments: configuration → one `gradflow.flow_ensemble` call per
(activation, width, init scale) → labelled `xarray.Dataset`s of breakplanes, clusters and
pins; a gradient-descent check of the pins, and loss-surface slices about a pin."""

import pathlib

import jax
import numpy as np

import gradflow as gf

from . import measures as ms
from .config import AdaptiveRegimeConfig


# One dict for every call, so that every ensemble of one shape shares its compiled program
# (the observables are static arguments of the flow).
OBSERVABLES = gf.radon.rs_observables()


def is_kinked(activation: str) -> bool:
    """Whether `activation` has kinks, so that its flow is the exact Filippov flow with an
    event log (ReLU, leaky ReLU); otherwise its breakplanes are the zero sets."""
    return len(gf.get_activation(activation).kinks) > 0


def initial_nets(key, num_seeds: int, width: int, dim: int, scale: float, activation: str):
    """`num_seeds` biased nets from `random_net(..., distribution="sphere")`: balanced
    neurons of norm $\\sqrt2\\,\\varepsilon$, stacked along a seed axis."""
    keys = jax.random.split(key, num_seeds)
    return jax.vmap(
        lambda k: gf.random_net(
            k,
            width=width,
            dim=dim,
            scale=scale,
            activation=activation,
            bias=True,
            distribution="sphere",
        )  # fmt: skip
    )(keys)


def flow_options(config: AdaptiveRegimeConfig, y, activation: str) -> dict:
    """The keyword arguments of the flow: stop rules, save times, RS observables."""
    initial_loss = 0.5 * float(np.mean(np.asarray(y) ** 2))
    options = dict(
        t1=config.t1,
        ts=gf.log_times(config.t1, config.num_times, t_min=1e-3),
        loss_tol=config.loss_tol * initial_loss,
        stationarity_tol=config.stationarity_tol,
        rtol=config.rtol,
        max_steps=config.max_steps,
        observables=OBSERVABLES,
    )
    if is_kinked(activation):
        options["max_events"] = config.max_events
    return options


def run_ensemble(
    config: AdaptiveRegimeConfig,
    x,
    y,
    *,
    activation: str,
    width: int,
    scale: float,
    num_seeds: int,
    key,
    progress: bool = False,
    checkpoint_dir=None,
):
    """The flows of `num_seeds` nets on `(x, y)`: one `flow_ensemble` call.

    **Returns:** the `Solution` (seed axis first) and the initial nets."""
    x = np.asarray(x, np.float64)
    nets = initial_nets(key, num_seeds, width, x.shape[1], scale, activation)
    sol = gf.flow_ensemble(
        nets, x, np.asarray(y, np.float64), progress=progress, checkpoint_dir=checkpoint_dir,
        **flow_options(config, y, activation),
    )  # fmt: skip
    return sol, nets


class _Log:
    """One seed's event log as NumPy arrays (the fields of `gradflow.EventLog`)."""

    def __init__(self, events, seed):
        for name in ("neuron", "point", "kink", "kind", "time_in", "time_out", "direction"):
            setattr(self, name, np.asarray(getattr(events, name))[seed])


def _filled(values, valid):
    """`values` (S, T, ...) with the entries past each seed's stop (`valid` False)
    replaced by the seed's last valid entry: the run's end state, where it stopped."""
    out = np.array(values, np.float64)
    S, T = valid.shape
    for s in range(S):
        last = np.flatnonzero(valid[s])
        last = last[-1] if len(last) else 0
        out[s, last + 1 :] = out[s, last]
    return out


def ensemble_dataset(config: AdaptiveRegimeConfig, sol, x, y, activation: str):
    """The labelled dataset of one ensemble: breakplanes and clusters over time, pins from
    the event log (kinked activations) and from the end state, and per-seed summaries.

    Past a seed's stop (`t_stop`: fitted, stationary or `t1`) the time series hold its
    end state (`stopped` says where)."""
    import xarray as xr

    x = np.asarray(x, np.float64)
    centre, radius = ms.data_ball(x)
    ts = np.asarray(sol.ts[0], np.float64)
    t_stop = np.asarray(sol.t_stop, np.float64)
    S, T = len(t_stop), len(ts)
    valid = ts[None, :] <= t_stop[:, None]
    obs = sol.observables
    xi = _filled(obs["orientation"], valid)  # (S, T, m, d)
    gamma = _filled(obs["offset"], valid)
    amplitude = _filled(obs["amplitude"], valid)
    a_t = _filled(sol.nets.a, valid)
    W_t = _filled(sol.nets.W, valid)
    b_t = _filled(sol.nets.b, valid)
    m = xi.shape[2]
    a_end, W_end, b_end = (np.asarray(v, np.float64) for v in (sol.net.a, sol.net.W, sol.net.b))
    end = jax.vmap(gf.radon.radon_spline)(sol.net)
    xi_end, gamma_end = np.asarray(end.orientation), np.asarray(end.offset)
    kinked = is_kinked(activation)

    labels = np.zeros((S, T, m), np.int64)
    counts = {k: np.zeros((S, T), np.int64) for k in ("clusters", "largest", "clustered")}
    grown_count = np.zeros((S, T), np.int64)
    for s in range(S):
        for t in range(T):
            labels[s, t] = ms.clusters(xi[s, t], gamma[s, t], centre, radius, config.cluster_tol)
            c = ms.cluster_counts(labels[s, t])
            for k in counts:
                counts[k][s, t] = c[k]
            grown_count[s, t] = ms.grown(a_t[s, t], W_t[s, t], b_t[s, t], config.growth_floor).sum()

    tols = np.asarray(config.cluster_tols, np.float64)
    end_counts = {
        f"{k}_{who}": np.zeros((S, len(tols)), np.int64)
        for k in ("clusters", "largest", "clustered")
        for who in ("all", "grown")
    }
    formation = np.full(S, np.nan)
    alignment = np.full(S, np.nan)
    alignment_min = np.full(S, np.nan)
    pins_end = np.zeros(S, np.int64)
    pinned_neurons_end = np.zeros(S, np.int64)
    max_points_end = np.zeros(S, np.int64)
    state_pins_end = np.zeros(S, np.int64)
    mismatch = np.zeros(S, np.int64)
    median_pin_distance = np.full(S, np.nan)
    near_pinned_fraction = np.full(S, np.nan)
    series = {k: np.zeros((S, T), np.int64) for k in
              ("held", "pinned_neurons", "max_points", "gained", "released")}  # fmt: skip
    pin_events = np.zeros(S, np.int64)
    crossings = np.zeros(S, np.int64)
    released = np.zeros(S, np.int64)
    pin_duration = np.full(S, np.nan)
    pinned_in_clusters = np.full(S, np.nan)
    released_on_point = np.zeros(S, np.int64)
    for s in range(S):
        is_grown = ms.grown(a_end[s], W_end[s], b_end[s], config.growth_floor)
        for j, tol in enumerate(tols):
            for who, include in (("all", None), ("grown", is_grown)):
                lab = ms.clusters(xi_end[s], gamma_end[s], centre, radius, tol, include)
                c = ms.cluster_counts(lab)
                for k in ("clusters", "largest", "clustered"):
                    end_counts[f"{k}_{who}"][s, j] = c[k]
        final = labels[s, -1]
        sizes = ms.cluster_sizes(final)
        times = ms.formation_times(labels[s], ts)
        if times:
            formation[s] = times[int(np.argmax(sizes))] if sizes.max() >= 2 else np.nan
        alignment[s], alignment_min[s] = ms.grown_alignment(
            a_end[s], W_end[s], b_end[s], activation, x, config.cluster_tol, config.growth_floor
        )
        state_pins = ms.pins_from_state(W_end[s], b_end[s], x, activation, config.pin_tol)
        state_pins_end[s] = len(state_pins)
        distance = ms.point_distances(xi_end[s], gamma_end[s], x).min(axis=1) / radius
        median_pin_distance[s] = float(np.median(distance[is_grown]))
        near_pinned_fraction[s] = float(np.mean(distance[is_grown] <= 1e-6))
        if kinked:
            log = _Log(obs["events"], s)
            held = ms.pins_at(log, t_stop[s])
            pins_end[s] = len(held)
            neurons = [k for k, _ in held]
            pinned_neurons_end[s] = len(set(neurons))
            max_points_end[s] = max((neurons.count(k) for k in set(neurons)), default=0)
            mismatch[s] = len(held ^ state_pins)
            # State pins the log released: at a rest point the field vanishes on both
            # sides, so a released breakplane can stay on its point to rounding.
            for k, i in state_pins - held:
                records = np.flatnonzero(
                    (log.kind == ms.PIN) & (log.neuron == k) & (log.point == i)
                )
                released_on_point[s] += bool(len(records)) and np.isfinite(
                    log.time_out[records[-1]]
                )
            grown_labels = ms.clusters(xi_end[s], gamma_end[s], centre, radius,
                                       config.cluster_tol, is_grown)  # fmt: skip
            sizes_grown = ms.cluster_sizes(grown_labels)
            members = np.flatnonzero(np.isin(grown_labels, np.flatnonzero(sizes_grown >= 2)))
            if len(members):
                pinned_in_clusters[s] = float(np.mean([k in set(neurons) for k in members]))
            over = ms.pins_over_time(log, np.minimum(ts, t_stop[s]), m)
            for k in series:
                series[k][s] = over[k]
            pin_events[s] = int(np.sum(log.kind == ms.PIN))
            crossings[s] = int(np.sum(log.kind == 0))
            released[s] = int(np.sum((log.kind == ms.PIN) & ~np.isnan(log.time_out)))
            durations = ms.pin_durations(log, t_stop[s])
            pin_duration[s] = float(np.median(durations)) if len(durations) else np.nan
    seed = np.arange(S)
    dims_t = ("seed", "time")
    data = dict(
        loss=(dims_t, _filled(sol.loss, valid)),
        stopped=(dims_t, ~valid),
        orientation=(("seed", "time", "neuron", "dim"), xi),
        offset=(("seed", "time", "neuron"), gamma),
        amplitude=(("seed", "time", "neuron"), amplitude),
        label=(("seed", "time", "neuron"), labels),
        a=(("seed", "time", "neuron"), a_t),
        W=(("seed", "time", "neuron", "dim"), W_t),
        b=(("seed", "time", "neuron"), b_t),
        grown_neurons=(dims_t, grown_count),
        **{
            f"num_{k}" if k == "clusters" else f"{k}_cluster" if k == "largest" else k: (dims_t, v)
            for k, v in counts.items()
        },  # fmt: skip
        **{f"end_{k}": (("seed", "tol"), v) for k, v in end_counts.items()},
        t_stop=("seed", t_stop),
        stop_reason=("seed", np.asarray(sol.stop_reason)),
        status=("seed", np.asarray(sol.status)),
        num_steps=("seed", np.asarray(sol.num_steps)),
        final_loss=("seed", np.asarray(sol.final_loss)),
        formation_time=("seed", formation),
        alignment=("seed", alignment),
        alignment_min=("seed", alignment_min),
        state_pins=("seed", state_pins_end),
        median_point_distance=("seed", median_pin_distance),
        near_pinned_fraction=("seed", near_pinned_fraction),
        a_end=(("seed", "neuron"), a_end),
        W_end=(("seed", "neuron", "dim"), W_end),
        b_end=(("seed", "neuron"), b_end),
    )
    if kinked:
        events = obs["events"]
        data.update(
            pins_held=(dims_t, series["held"]),
            pinned_neurons=(dims_t, series["pinned_neurons"]),
            max_points_per_neuron=(dims_t, series["max_points"]),
            pins_gained=(dims_t, series["gained"]),
            pins_released=(dims_t, series["released"]),
            pins_end=("seed", pins_end),
            pinned_neurons_end=("seed", pinned_neurons_end),
            max_points_end=("seed", max_points_end),
            log_state_mismatch=("seed", mismatch),
            released_on_point=("seed", released_on_point),
            pinned_in_clusters=("seed", pinned_in_clusters),
            num_pin_events=("seed", pin_events),
            num_crossings=("seed", crossings),
            num_releases=("seed", released),
            median_pin_duration=("seed", pin_duration),
            num_events=("seed", np.asarray(events.num_events)),
            event_neuron=(("seed", "event"), np.asarray(events.neuron)),
            event_point=(("seed", "event"), np.asarray(events.point)),
            event_kind=(("seed", "event"), np.asarray(events.kind)),
            event_time_in=(("seed", "event"), np.asarray(events.time_in)),
            event_time_out=(("seed", "event"), np.asarray(events.time_out)),
            event_direction=(("seed", "event"), np.asarray(events.direction)),
        )
    ds = xr.Dataset(
        data,
        coords=dict(
            seed=seed, time=ts, neuron=np.arange(m), dim=np.arange(x.shape[1]), tol=tols
        ),  # fmt: skip
        attrs=dict(
            activation=activation,
            width=m,
            kinked=int(kinked),
            centre=centre,
            radius=radius,
            cluster_tol=config.cluster_tol,
            growth_floor=config.growth_floor,
            pin_tol=config.pin_tol,
            x=x.ravel(),
            y=np.asarray(y, np.float64),
            dim_x=x.shape[1],
        ),  # fmt: skip
    )
    return ds


def example(
    config: AdaptiveRegimeConfig, *, dim: int = 2, progress: bool = False, checkpoint_dir=None
):
    """The 3-point 2-D example (`dim=2`) or its 1-D analogue (`dim=1`): `config.num_seeds`
    seeds of width `config.width`, init scale `config.scale`, `config.activation`.

    **Returns:** the dataset of `ensemble_dataset` with `attrs["scale"]`, and the
    `Solution` (for the gradient-descent check and the slices)."""
    if dim not in (1, 2):
        raise ValueError(f"`dim` must be 1 (the line) or 2 (the three points), got {dim!r}.")
    x, y = config.data_2d() if dim == 2 else config.data_1d()
    key = jax.random.fold_in(jax.random.key(config.seed), dim)
    directory = _directory(
        checkpoint_dir, config, f"example{dim}d", config.activation, f"m{config.width}",
        config.scale, f"seeds{config.num_seeds}",
    )  # fmt: skip
    sol, _ = run_ensemble(
        config, x, y, activation=config.activation, width=config.width, scale=config.scale,
        num_seeds=config.num_seeds, key=key, progress=progress, checkpoint_dir=directory,
    )  # fmt: skip
    ds = ensemble_dataset(config, sol, x, y, config.activation)
    ds.attrs["scale"] = config.scale
    return ds, sol


SWEEP_VARIABLES = (
    "final_loss", "t_stop", "stop_reason", "status", "num_steps", "formation_time",
    "alignment", "alignment_min", "state_pins", "median_point_distance",
    "near_pinned_fraction",
)  # fmt: skip
SWEEP_TOL_VARIABLES = tuple(
    f"end_{k}_{who}" for k in ("clusters", "largest", "clustered") for who in ("all", "grown")
)
SWEEP_KINKED_VARIABLES = (
    "pins_end", "pinned_neurons_end", "max_points_end", "log_state_mismatch",
    "num_pin_events", "num_crossings", "num_releases", "median_pin_duration",
    "released_on_point", "pinned_in_clusters",
)  # fmt: skip


def sweep(config: AdaptiveRegimeConfig, *, progress: bool = False, checkpoint_dir=None):
    """Clusters and pins at the end of training on the 3-point 2-D example for every
    activation × width × init scale of the sweep, `config.sweep_seeds` seeds each (the
    same seeds' directions at every scale: each scale scales one draw).

    **Returns:** a dataset over `(activation, width, scale, seed[, tol])`; pin variables
    from the event log are NaN for smooth activations."""
    import xarray as xr

    x, y = config.data_2d()
    A, M, E = config.sweep_activations, config.sweep_widths, config.sweep_scales
    S, K = config.sweep_seeds, len(config.cluster_tols)
    out = {name: np.full((len(A), len(M), len(E), S), np.nan) for name in
           SWEEP_VARIABLES + SWEEP_KINKED_VARIABLES}  # fmt: skip
    out.update({name: np.full((len(A), len(M), len(E), S, K), np.nan)
                for name in SWEEP_TOL_VARIABLES})  # fmt: skip
    fraction_grown = np.full((len(A), len(M), len(E), S), np.nan)
    for i, activation in enumerate(A):
        for j, width in enumerate(M):
            for k, scale in enumerate(E):
                key = jax.random.fold_in(jax.random.key(config.seed + 1), width)
                directory = _directory(checkpoint_dir, config, "sweep", activation, f"m{width}",
                                       scale, f"seeds{S}")  # fmt: skip
                sol, _ = run_ensemble(
                    config, x, y, activation=activation, width=width, scale=scale,
                    num_seeds=S, key=key, progress=progress, checkpoint_dir=directory,
                )  # fmt: skip
                ds = ensemble_dataset(config, sol, x, y, activation)
                for name in SWEEP_VARIABLES + SWEEP_TOL_VARIABLES:
                    out[name][i, j, k] = ds[name].values
                if is_kinked(activation):
                    for name in SWEEP_KINKED_VARIABLES:
                        out[name][i, j, k] = ds[name].values
                fraction_grown[i, j, k] = ds["grown_neurons"].values[:, -1] / width
    dims = ("activation", "width", "scale", "seed")
    data = {name: (dims, v) for name, v in out.items() if v.ndim == 4}
    data.update({name: (dims + ("tol",), v) for name, v in out.items() if v.ndim == 5})
    data["grown_fraction"] = (dims, fraction_grown)
    return xr.Dataset(
        data,
        coords=dict(
            activation=list(A),
            width=list(M),
            scale=list(E),
            seed=np.arange(S),
            tol=list(config.cluster_tols),
        ),  # fmt: skip
        attrs=dict(cluster_tol=config.cluster_tol, growth_floor=config.growth_floor),
    )


def _directory(checkpoint_dir, config: AdaptiveRegimeConfig, *parts):
    """A checkpoint directory per ensemble: readable parts, and a digest of every setting
    that changes its flows (so a changed configuration gets a new directory instead of
    the store's refusal of a different run's chunks)."""
    if checkpoint_dir is None:
        return None
    import hashlib

    settings = (
        config.points_2d, config.targets_2d, config.points_1d, config.targets_1d, config.t1,
        config.num_times, config.loss_tol, config.stationarity_tol, config.rtol,
        config.max_steps, config.max_events, config.seed,
    )  # fmt: skip
    digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:8]
    name = "_".join(str(p) if not isinstance(p, float) else f"{p:g}" for p in parts)
    return str(pathlib.Path(checkpoint_dir) / f"{name}_{digest}")


# ---------------------------------------------------------------------------------------
# Gradient descent against the pins of the exact flow.
# ---------------------------------------------------------------------------------------


def gd_check(config: AdaptiveRegimeConfig, sol, x, y, *, seed: int = 0):
    """Gradient descent at each step size of `config.gd_rates` from seed `seed`'s initial
    net, every iterate saved up to that seed's stop, against the exact flow's pins: for
    each pin $(k, i)$ of the event log, the distances $|\\xi_k\\cdot x_i - \\gamma_k| / R$
    of the GD iterates in the middle 80 % of the pin's interval (the ends are left out:
    GD reaches and leaves a pin a few steps off the flow's times), and, as a control, those
    of the pairs not pinned at those times.

    **Returns:** a dataset over `(rate, pin)`: the median, 90th percentile and max of
    the pinned distances in units of η·R... (`distance_over_rate_*`), the fraction of
    iterates within η·R (`within_rate`), the control's median (`unpinned_median`), and
    GD's loss and parameter distance to the flow at the stop."""
    import xarray as xr

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    centre, radius = ms.data_ball(x)
    log = _Log(sol.observables["events"], seed)
    t_stop = float(np.asarray(sol.t_stop)[seed])
    pins = ms.pin_table(log)
    if not pins:
        raise ValueError(f"seed {seed} holds no pin: nothing to check gradient descent against.")
    net0 = jax.tree_util.tree_map(lambda v: v[seed], sol.nets)
    net0 = gf.TwoLayerNet(np.asarray(sol.nets.a)[seed, 0], np.asarray(sol.nets.W)[seed, 0],
                          np.asarray(sol.nets.b)[seed, 0], net0.activation)  # fmt: skip
    names = ("median", "p90", "max")
    result = {f"distance_over_rate_{n}": np.full((len(config.gd_rates), len(pins)), np.nan)
              for n in names}  # fmt: skip
    within = np.full((len(config.gd_rates), len(pins)), np.nan)
    control = np.full((len(config.gd_rates), len(pins)), np.nan)
    gd_loss = np.zeros(len(config.gd_rates))
    gd_gap = np.zeros(len(config.gd_rates))
    for r, eta in enumerate(config.gd_rates):
        steps = int(np.floor(t_stop / eta))
        ts = eta * np.arange(steps + 1)
        gd = gf.gradient_descent(net0, x, y, learning_rate=eta, t1=steps * eta, ts=ts)
        W, b = np.asarray(gd.nets.W), np.asarray(gd.nets.b)  # (K, m, d), (K, m)
        norm = np.linalg.norm(W, axis=-1)
        distance = np.abs(W @ x.T + b[..., None]) / norm[..., None] / radius  # (K, m, n)
        times = np.asarray(gd.ts)
        for p, pin in enumerate(pins):
            t_out = pin["time_out"] if np.isfinite(pin["time_out"]) else t_stop
            lo, hi = pin["time_in"], t_out
            inside = (times >= lo + 0.1 * (hi - lo)) & (times <= hi - 0.1 * (hi - lo))
            if not inside.any():
                continue
            d = distance[inside, pin["neuron"], pin["point"]]
            result["distance_over_rate_median"][r, p] = np.median(d) / eta
            result["distance_over_rate_p90"][r, p] = np.quantile(d, 0.9) / eta
            result["distance_over_rate_max"][r, p] = np.max(d) / eta
            within[r, p] = np.mean(d <= eta)
            # The control: the other points of this neuron, at the same iterates, that no
            # pin of the log holds in this interval.
            held = [
                q["point"]
                for q in pins
                if q["neuron"] == pin["neuron"]
                and q["time_in"] < hi
                and (np.isnan(q["time_out"]) or q["time_out"] > lo)
            ]
            free = [i for i in range(len(x)) if i not in held]
            if free:
                control[r, p] = np.median(distance[inside][:, pin["neuron"], free])
        gd_loss[r] = float(np.asarray(gd.final_loss))
        end = jax.tree_util.tree_map(lambda v: np.asarray(v)[seed], sol.net)
        flat_gd = np.concatenate([np.ravel(np.asarray(v)) for v in (gd.net.a, gd.net.W, gd.net.b)])
        flat = np.concatenate([np.ravel(v) for v in (end.a, end.W, end.b)])
        gd_gap[r] = float(np.linalg.norm(flat_gd - flat) / np.linalg.norm(flat))
    rates = list(config.gd_rates)
    return xr.Dataset(
        {
            **{k: (("rate", "pin"), v) for k, v in result.items()},
            "within_rate": (("rate", "pin"), within),
            "unpinned_median": (("rate", "pin"), control),
            "gd_final_loss": ("rate", gd_loss),
            "gd_relative_distance_at_stop": ("rate", gd_gap),
            "pin_neuron": ("pin", [p["neuron"] for p in pins]),
            "pin_point": ("pin", [p["point"] for p in pins]),
            "pin_time_in": ("pin", [p["time_in"] for p in pins]),
            "pin_time_out": ("pin", [p["time_out"] for p in pins]),
        },
        coords=dict(rate=rates, pin=np.arange(len(pins))),
        attrs=dict(
            seed=seed, t_stop=t_stop, flow_final_loss=float(np.asarray(sol.final_loss)[seed])
        ),
    )


# ---------------------------------------------------------------------------------------
# Loss-surface slices about a pinned neuron.
# ---------------------------------------------------------------------------------------


def _derivative(activation, z):
    phi = gf.get_activation(activation)
    z = np.asarray(z, np.float64)
    return np.asarray(jax.jvp(phi, (z,), (np.ones_like(z),))[1])


def slice_loss(a, W, b, activation, x, y, neuron, point, angles, across):
    """The loss about a breakplane pinned at a data point, on the plane of two directions
    of neuron $k$'s weights $\\tilde w_k = (w_k, b_k)$, every other weight held:

    - the angle $\\phi$: the breakplane rotated about the data point $x_p$ (`point`),
      $\\tilde w_k(\\phi) = s\\,(\\cos\\phi, \\sin\\phi, -(\\cos\\phi, \\sin\\phi)\\cdot
      x_p)$ with $s = \\|w_k\\|$: every such breakplane passes through $x_p$ (the valley
      floor if $p$ pins it);
    - `across` $u$: $\\tilde w_k(\\phi) + u\\,\\|\\tilde w_k\\|\\,\\tilde x_p/\\|\\tilde x_p\\|$,
      along the gradient of $z_{kp} = \\tilde w_k\\cdot\\tilde x_p$, the normal of the pin's
      surface $\\{z_{kp} = 0\\}$ in the flow's own (Euclidean) metric, so that a valley
      across $u = 0$ is exactly the Filippov condition of a pin (both one-sided fields
      point into the surface).

    Returned as the change $L - L_0 = \\mathrm{mean}_i(r_i\\Delta f_i) +
    \\tfrac12\\mathrm{mean}_i\\Delta f_i^2$ from the given net ($r$ its residuals), with no
    cancellation against $L_0$: at small init $\\Delta f = O(\\varepsilon^2)$. The paper's
    slices $\\tilde\\ell(\\tilde\\xi_i\\,|\\,\\dots)$ are in its RS coordinates; these are
    in the weights, where the flow's pins are decided.

    **Returns:** `(delta_loss, slope)`, `delta_loss` over `angles` × `across` (broadcast);
    `slope(j, sign)`: for the same `angles` (1-D), the one-sided derivative along $u$
    where the breakplane passes through data point $j$ ($u = u_j(\\phi)$), from below
    (`sign=-1`) or above (`sign=+1`), and $u_j(\\phi)$ itself."""
    phi = gf.get_activation(activation)
    a, W, b, x, y = (np.asarray(v, np.float64) for v in (a, W, b, x, y))
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"`x` must be (n, 2) for a slice in (angle, across), got {x.shape}.")
    xt = np.c_[x, np.ones(len(x))]  # x̃
    s = np.linalg.norm(W[neuron])
    size = np.linalg.norm(np.r_[W[neuron], b[neuron]])
    normal = size * xt[point] / np.linalg.norm(xt[point])
    z0 = xt @ np.r_[W[neuron], b[neuron]]
    r0 = a @ np.asarray(phi(W @ x.T + b[:, None])) - y
    angles, across = np.broadcast_arrays(np.asarray(angles, np.float64), np.asarray(across))

    def weights(angles, across):
        c, t = np.cos(angles), np.sin(angles)
        floor = s * np.stack([c, t, -(c * x[point, 0] + t * x[point, 1])], axis=-1)
        return floor + across[..., None] * normal

    delta_f = a[neuron] * (np.asarray(phi(weights(angles, across) @ xt.T)) - np.asarray(phi(z0)))
    delta_loss = np.mean(r0 * delta_f + 0.5 * delta_f**2, axis=-1)

    def slope(j, sign):
        rate = normal @ xt[j]  # dz_kj/du
        floor = weights(angles, np.zeros_like(angles))
        u_j = -(floor @ xt[j]) / rate
        z = np.array(weights(angles, u_j) @ xt.T)
        z[..., j] = 0.0
        r = r0 + a[neuron] * (np.asarray(phi(z)) - np.asarray(phi(z0)))
        slopes = np.array(_derivative(activation, z))
        # Just below u_j (sign −1), z_kj has the sign of −rate.
        slopes[..., j] = _derivative(activation, np.full(1, sign * np.sign(rate) * 1e-30))[0]
        return a[neuron] * np.mean(r * slopes * (xt @ normal), axis=-1), u_j

    return delta_loss, slope


def pinned_configuration(config: AdaptiveRegimeConfig, ds, *, seed: int | None = None):
    """A state of a 2-D example run (`ds` from `example(dim=2)`) with a neuron pinned
    mid-training: the longest pin of the event log held by a neuron that is grown at the
    end, in the first seed that has one (or in `seed`), at the save time closest to the
    middle of the pin's interval.

    **Returns:** `(seed, neuron, point, time index)`."""
    if not ds.attrs["kinked"]:
        raise ValueError("`ds` is of a smooth activation: it has no pins to slice about.")
    fitted = ds["stop_reason"].values == int(gf.StopReason.LOSS_TOLERANCE)
    order = list(np.flatnonzero(fitted)) + list(np.flatnonzero(~fitted))
    seeds = [seed] if seed is not None else order
    ts = ds.time.values
    for s in seeds:
        is_grown = ms.grown(*(ds[v].values[s] for v in ("a_end", "W_end", "b_end")),
                            config.growth_floor)  # fmt: skip
        t_stop = float(ds["t_stop"].values[s])
        best = None
        for e in np.flatnonzero(ds["event_kind"].values[s] == ms.PIN):
            k = int(ds["event_neuron"].values[s, e])
            if not is_grown[k]:
                continue
            t_in = float(ds["event_time_in"].values[s, e])
            t_out = float(ds["event_time_out"].values[s, e])
            t_out = t_stop if np.isnan(t_out) else t_out
            if best is None or t_out - t_in > best[0]:
                best = (t_out - t_in, k, int(ds["event_point"].values[s, e]), t_in, t_out)
        if best is None:
            continue
        _, k, i, t_in, t_out = best
        # The middle in log time: the save times are log-spaced, and at small init the
        # breakplanes move early (t = O(1)) while the growth takes t ∝ log(1/ε).
        index = int(np.argmin(np.abs(np.log(np.maximum(ts, 1e-300)) - 0.5 * np.log(t_in * t_out))))
        if t_in <= ts[index] <= t_out:
            return s, k, i, index
    raise ValueError("no seed holds a pin of a grown neuron at a save time: no slice.")


def loss_slices(config: AdaptiveRegimeConfig, ds, *, seed: int | None = None):
    """Loss slices about a pinned neuron during training (`pinned_configuration`), on the
    plane (rotation about the pinned point, step across its surface) of `slice_loss`:
    the change of the loss over $\\phi \\in [\\phi_k - \\pi, \\phi_k + \\pi)$,
    $u \\in [-0.6, 0.6]$, and each data point's curve (the weights whose breakplane passes
    through it) classified at every angle by `crease_kind` from the exact one-sided
    slopes along $u$ there.

    **Returns:** a dataset with `delta_loss` over `(across, angle)`, `kind` over
    `(point, angle)` (0 valley, 1 ridge, 2 crease), the curves `curve` ($u_j(\\phi)$),
    the 1-D slices across the pinned point's surface at the neuron's angle (`across_line`)
    and along it (`along`: the breakplane rotated about the point), and attrs naming the
    seed, time, neuron, point, and the kind at the configuration itself."""
    import xarray as xr

    x = np.asarray(ds.attrs["x"]).reshape(-1, 2)
    y = np.asarray(ds.attrs["y"])
    activation = ds.attrs["activation"]
    s, k, i, t = pinned_configuration(config, ds, seed=seed)
    a, W, b = (ds[v].values[s, t] for v in ("a", "W", "b"))
    angle0 = float(np.arctan2(W[k, 1], W[k, 0]))
    G = config.slice_points
    angles = angle0 + np.linspace(-np.pi, np.pi, G, endpoint=False)
    across = np.linspace(-0.6, 0.6, G)

    def cut(phi, u):
        return slice_loss(a, W, b, activation, x, y, k, i, phi, u)

    delta, _ = cut(angles[None, :], across[:, None])
    _, slope = cut(angles, np.zeros_like(angles))
    below, above, curves = [], [], []
    for j in range(len(x)):
        lo, u_j = slope(j, -1)
        below.append(lo)
        above.append(slope(j, +1)[0])
        curves.append(u_j)
    below, above, curves = np.stack(below), np.stack(above), np.stack(curves)
    codes = {ms.VALLEY: 0, ms.RIDGE: 1, ms.CREASE: 2}
    kind = np.vectorize(lambda lo, hi: codes[ms.crease_kind(lo, hi)])(below, above)
    line = np.linspace(-0.2, 0.2, 241)
    across_line, _ = cut(np.full_like(line, angle0), line)
    along_angles = angle0 + np.linspace(-np.pi / 2, np.pi / 2, 241)
    along, _ = cut(along_angles, np.zeros_like(along_angles))
    _, here = cut(np.array([angle0]), np.zeros(1))
    here_below, here_above = float(here(i, -1)[0][0]), float(here(i, +1)[0][0])
    return xr.Dataset(
        dict(
            delta_loss=(("across", "angle"), delta),
            kind=(("point", "angle"), kind),
            slope_below=(("point", "angle"), below),
            slope_above=(("point", "angle"), above),
            curve=(("point", "angle"), curves),
            across_line=(("line",), across_line),
            along=(("along_angle",), along),
        ),
        coords=dict(
            across=across,
            angle=angles,
            point=np.arange(len(x)),
            line=line,
            along_angle=along_angles,
        ),  # fmt: skip
        attrs=dict(
            seed=s,
            time=float(ds.time.values[t]),
            neuron=k,
            pinned_point=i,
            angle=angle0,
            loss=float(ds["loss"].values[s, t]),
            slope_below_here=here_below,
            slope_above_here=here_above,
            kind_here=ms.crease_kind(here_below, here_above),
            x=x.ravel(),
            activation=activation,
        ),  # fmt: skip
    )
