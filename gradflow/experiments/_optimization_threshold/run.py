"""The runs of the optimization-threshold experiment: one `gradflow.flow_ensemble` call per
block (dimension $d$, width $m$) over every (size $n$, seed), each run with its own sample
(padded to the block's largest $n$ with zero-weight points) and its own init; then the
measures of `measures` per run, as a labelled `xarray.Dataset`."""

import pathlib
import warnings

import equinox as eqx
import jax
import numpy as np
import optax
import xarray as xr

import gradflow as gf

from . import measures as ms
from .config import ThresholdConfig


def initial_nets(config: ThresholdConfig, dim: int, width: int, keys, activation="relu"):
    """The stacked initial nets of `keys`: balanced (`distribution="sphere"`) or i.i.d.
    Gaussian entries, scale $\\lambda$."""
    distribution = "sphere" if config.balanced else "gaussian"

    def draw(key):
        return gf.random_net(
            key,
            width=width,
            dim=dim,
            scale=config.init_scale,
            activation=activation,
            distribution=distribution,
        )

    return jax.vmap(draw)(keys)


def run_keys(config: ThresholdConfig, dim: int, width: int, sizes, num_seeds: int):
    """One key per (size, seed), C order (seed fastest): its own stream per (`seed` of
    the config, d, m, n, seed), so a run's init does not depend on the rest of the grid."""
    base = jax.random.key(config.seed)

    def key(n, s):
        k = base
        for value in (dim, width, n, s):
            k = jax.random.fold_in(k, value)
        return k

    return jax.numpy.stack([key(n, s) for n in sizes for s in range(num_seeds)])


def initial_net_table(config: ThresholdConfig, specs, width: int, dim_max: int, num_seeds: int):
    """The stacked initial nets of every run of `specs` (`[(d, sizes), ...]`), each drawn
    in its own dimension $d$ and padded with zero input coordinates to `dim_max`: the
    gradient of a coordinate that is zero in every $x_i$ is zero, so the flow in
    $\\mathbb{R}^{d_{\\max}}$ is the flow in $\\mathbb{R}^d$ exactly, and every
    dimension shares one compiled program."""
    parts = []
    for d, sizes in specs:
        nets = initial_nets(config, d, width, run_keys(config, d, width, sizes, num_seeds))
        W = jax.numpy.pad(nets.W, ((0, 0), (0, 0), (0, dim_max - d)))
        parts.append(eqx.tree_at(lambda net: net.W, nets, W))
    return jax.tree_util.tree_map(lambda *v: jax.numpy.concatenate(v), *parts)


def group_data(config: ThresholdConfig, specs, n_max: int, dim_max: int, num_seeds: int):
    """Per-run data of `specs` padded to `n_max` samples (zero weight) and `dim_max`
    coordinates (zero): `(x (R, n_max, dim_max), y (R, n_max), weights (R, n_max))`, and
    the unpadded samples."""
    raw, padded = [], []
    for d, sizes in specs:
        for n in sizes:
            for s in range(num_seeds):
                x, y = config.data(d, n, s)
                raw.append((x, y))
                px, py, pw = gf.pad_samples(n_max, np.pad(x, ((0, 0), (0, dim_max - d))), y)
                padded.append((px, py, pw))
    xs, ys, ws = (np.stack(v) for v in zip(*padded))
    return xs, ys, ws, raw


def run_group(
    config: ThresholdConfig,
    width: int,
    specs,
    *,
    progress: bool = False,
    checkpoint_dir=None,
    num_seeds: int | None = None,
) -> dict:
    """The exact ReLU flows of every (d, n, seed) of `specs` = `[(d, sizes), ...]` at one
    width, as **one** `gradflow.flow_ensemble` call (one compiled program: data padded to
    the largest $n$ and $d$), checkpointed per chunk of `chunk_size` runs under
    `checkpoint_dir/relu_m{width}`; then the measures of every run. `num_seeds`: seeds
    per (d, n), default `config.num_seeds` (seed s is the same run whatever the count).

    **Returns:** `{d: Dataset}`, each with dimensions `(n, seed)` (+ `neuron`, `time`,
    `coord`, `sign`) and attributes `dim`, `width`, `seconds` (the whole group's wall time).
    """
    import time

    specs = [(int(d), tuple(int(n) for n in sizes)) for d, sizes in specs]
    n_max = max(max(sizes) for _, sizes in specs)
    dim_max = max(d for d, _ in specs)
    num_seeds = config.num_seeds if num_seeds is None else num_seeds
    xs, ys, ws, raw = group_data(config, specs, n_max, dim_max, num_seeds)
    nets = initial_net_table(config, specs, width, dim_max, num_seeds)
    if checkpoint_dir is not None:
        checkpoint_dir = pathlib.Path(checkpoint_dir) / f"relu_m{width}"
    stop_rules = {}
    if config.stop_early:
        stop_rules = dict(
            stationarity_tol=config.stationarity_tol,
            loss_tol=0.05 * config.interpolation_tol * config.noise**2,  # ½·MSE, a tenth
        )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Only the number of events is read; their log is kept short on purpose.
        warnings.filterwarnings("ignore", message="Event log full")
        solution = gf.flow_ensemble(
            nets,
            xs,
            ys,
            weights=ws,
            t1=config.t1,
            ts=config.times(),
            kinks="exact",
            max_events=8,
            max_steps=config.max_steps,
            chunk_size=config.chunk_size,
            **stop_rules,
            progress=progress,
            checkpoint_dir=checkpoint_dir,
        )
    seconds = time.perf_counter() - start
    arrays = dict(
        a=np.asarray(solution.net.a),
        W=np.asarray(solution.net.W),
        a_t=np.asarray(solution.nets.a),
        W_t=np.asarray(solution.nets.W),
        ts=np.asarray(solution.ts)[0],
        mse_t=2 * np.asarray(solution.loss),  # ½·mean → mean
        final_mse=2 * np.asarray(solution.final_loss),
        stationarity=np.asarray(solution.stationarity, np.float64),
        t_stop=np.asarray(solution.t_stop, np.float64),
        status=np.asarray(solution.status, np.float64),
        num_events=np.asarray(solution.observables["events"].num_events, np.float64),
        num_steps=np.asarray(solution.num_steps, np.float64),
    )
    out, first = {}, 0
    for d, sizes in specs:
        count = len(sizes) * num_seeds
        part = {k: (v if k == "ts" else v[first : first + count]) for k, v in arrays.items()}
        part["W"], part["W_t"] = part["W"][..., :d], part["W_t"][..., :d]
        ds = measure_runs(config, d, sizes, raw[first : first + count], part, num_seeds)
        ds.attrs.update(dim=d, width=width, seconds=seconds)
        out[d] = ds
        first += count
    return out


def _settle_time(ts, mse, final, noise):
    """The first save time from which the training MSE stays within $10^{-3}\\sigma^2$
    of its final value."""
    far = np.abs(mse - final) > 1e-3 * noise**2
    far &= np.isfinite(mse)
    if not far.any():
        return ts[0]
    last = np.flatnonzero(far)[-1]
    return ts[last + 1] if last + 1 < len(ts) else np.nan


def measure_runs(
    config: ThresholdConfig, dim: int, sizes, raw, arrays: dict, num_seeds: int
) -> xr.Dataset:
    """Every measure of every run of one dimension (NumPy, on the host), from the flows'
    `arrays` (see `run_group`) and the unpadded samples `raw`."""
    shape = (len(sizes), num_seeds)
    beta = config.beta(dim)
    sigma2 = config.noise**2
    c = ms.second_moment(config.inputs, dim)
    a_end, W_end = arrays["a"], arrays["W"]
    a_t, W_t = arrays["a_t"], arrays["W_t"]  # (R, T, m), (R, T, m, d)
    ts = arrays["ts"]
    width = a_end.shape[-1]
    names = (
        "train_mse test_mse ols_train_mse ols_test_mse distance_to_ols interpolating converged "
        "stationarity t_stop settle_time num_events num_steps status clusters alignment_time "
        "alignment_cos_extremal alignment_cos_ols extremal_value_plus extremal_value_minus "
        "extremal_cos_ols"
    ).split()
    out = {name: np.full(len(raw), np.nan) for name in names}
    per_neuron = {
        k: np.full((len(raw), width), np.nan) for k in ("cos_extremal", "cos_ols", "weight")
    }
    directions = np.full((len(raw), 2, dim), np.nan)
    theta_norm = np.sqrt(np.sum(a_t**2, axis=-1) + np.sum(W_t**2, axis=(-2, -1)))  # (R, T)
    mse_t = arrays["mse_t"]
    for r, (x, y) in enumerate(raw):
        a, W = a_end[r], W_end[r]
        out["train_mse"][r] = ms.train_mse(ms.relu_net(a, W, x), y)
        out["test_mse"][r] = ms.function_distance(a, W, beta, inputs=config.inputs) ** 2 + sigma2
        ols = ms.ols_fit(x, y)
        out["ols_train_mse"][r] = ms.train_mse(x @ ols, y)
        out["ols_test_mse"][r] = c * np.sum((ols - beta) ** 2) + sigma2
        out["distance_to_ols"][r] = ms.function_distance(a, W, ols, inputs=config.inputs)
        out["clusters"][r] = ms.count_clusters(
            a, W, angle_deg=config.cluster_angle_deg, min_share=config.cluster_min_share
        )
        D_plus, D_minus, values = ms.extremal_directions(x, y, seed=r)
        directions[r] = D_plus, D_minus
        out["extremal_value_plus"][r], out["extremal_value_minus"][r] = values
        ols_dir = ols / max(np.linalg.norm(ols), 1e-300)
        out["extremal_cos_ols"][r] = float(D_plus @ ols_dir)
        grown = np.flatnonzero(theta_norm[r] >= config.alignment_growth * theta_norm[r, 0])
        if grown.size:
            k = grown[0]
            out["alignment_time"][r] = ts[k]
            sign = np.sign(a_t[r, k])
            target = np.where(sign[:, None] > 0, D_plus[None], D_minus[None])
            per_neuron["cos_extremal"][r] = ms.cosines(W_t[r, k], target)
            per_neuron["cos_ols"][r] = ms.cosines(W_t[r, k], sign[:, None] * ols_dir[None])
            per_neuron["weight"][r] = np.abs(a_t[r, k]) * np.linalg.norm(W_t[r, k], axis=-1)
            # Neurons that moved: weight above 1 % of the largest (the others stayed near
            # 0, in a cone where G_n pushes them inwards, or dead).
            moved = per_neuron["weight"][r] >= 1e-2 * per_neuron["weight"][r].max()
            out["alignment_cos_extremal"][r] = np.median(per_neuron["cos_extremal"][r][moved])
            out["alignment_cos_ols"][r] = np.median(per_neuron["cos_ols"][r][moved])
        out["settle_time"][r] = _settle_time(ts, mse_t[r], arrays["final_mse"][r], config.noise)
    for name in ("stationarity", "t_stop", "status", "num_events", "num_steps"):
        out[name] = arrays[name]
    out["converged"] = (
        (out["status"] == 0) & (out["stationarity"] <= config.stationarity_tol)
    ).astype(np.float64)
    # 1: below the tolerance (an interpolating run's loss only falls further); 0: above
    # it at a stationary point; NaN: above it but still moving at t1 (undetermined).
    below = ms.is_interpolating(out["train_mse"], config.noise, config.interpolation_tol)
    out["interpolating"] = np.where(below, 1.0, np.where(out["converged"] > 0, 0.0, np.nan))
    data_vars = {name: (("n", "seed"), v.reshape(shape)) for name, v in out.items()}
    data_vars.update(
        {
            name: (("n", "seed", "neuron"), v.reshape(*shape, width))
            for name, v in per_neuron.items()
        }
    )
    data_vars["a_end"] = (("n", "seed", "neuron"), a_end.reshape(*shape, width))
    data_vars["W_end"] = (("n", "seed", "neuron", "coord"), W_end.reshape(*shape, width, dim))
    data_vars["extremal_directions"] = (
        ("n", "seed", "sign", "coord"),
        directions.reshape(*shape, 2, dim),
    )
    data_vars["train_mse_t"] = (("n", "seed", "time"), mse_t.reshape(*shape, len(ts)))
    data_vars["theta_norm_t"] = (("n", "seed", "time"), theta_norm.reshape(*shape, len(ts)))
    data_vars["a_t"] = (("n", "seed", "time", "neuron"), a_t.reshape(*shape, len(ts), width))
    data_vars["W_t"] = (
        ("n", "seed", "time", "neuron", "coord"),
        W_t.reshape(*shape, len(ts), width, dim),
    )
    return xr.Dataset(
        data_vars,
        coords=dict(
            n=np.asarray(sizes),
            seed=np.arange(num_seeds),
            time=ts,
            neuron=np.arange(width),
            coord=np.arange(dim),
            sign=["plus", "minus"],
        ),
        attrs=dict(sigma2=sigma2, inputs=config.inputs),
    )


def blocks(config: ThresholdConfig) -> dict[int, list[tuple[int, tuple[int, ...]]]]:
    """`{m: [(d, sizes), ...]}`: at `threshold_width`, the threshold sweep of every
    dimension of `dims` (at `loss_dim` its sizes joined with `loss_sizes`); at the other
    `widths`, the loss sweep at `loss_dim`. Each width is one compiled program."""
    out: dict[int, list] = {}
    for d in config.dims:
        sizes = set(config.threshold_sizes(d))
        if d == config.loss_dim and config.threshold_width in config.widths:
            sizes |= set(config.loss_sizes)
        out.setdefault(config.threshold_width, []).append((d, tuple(sorted(sizes))))
    for m in config.widths:
        if m == config.threshold_width and config.loss_dim in config.dims:
            continue
        out.setdefault(m, []).append((config.loss_dim, tuple(config.loss_sizes)))
    return out


def run_all(config: ThresholdConfig, *, progress=False, checkpoint_dir=None) -> dict:
    """`{(d, m): Dataset}` for every dimension and width of `blocks(config)`."""
    out = {}
    for m, specs in blocks(config).items():
        group = run_group(
            config,
            m,
            specs,
            progress=progress,
            checkpoint_dir=checkpoint_dir,
            num_seeds=config.seeds_at(m),
        )
        out.update({(d, m): ds for d, ds in group.items()})
    return out


def _fraction(flags):
    counts = np.sum(np.isfinite(flags), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(flags, axis=1) / counts


def threshold(ds: xr.Dataset, *, num_resamples: int, seed: int = 0) -> dict:
    """$n^*$ of one block (the first size from which at most half of the determined runs
    interpolate, log-interpolated) and its bootstrap over seeds.

    `censored` says where the grid does not bracket $n^*$: `"below"` when at most half
    interpolate already at the smallest size ($n^* \\le$ that size, reported as it),
    `"above"` when more than half still do at the largest (NaN); `""` otherwise."""
    flags = ds["interpolating"].values  # NaN (undetermined runs) left out
    point, reps = ms.bootstrap_threshold(ds.n.values, flags, num_resamples=num_resamples, seed=seed)
    finite = reps[np.isfinite(reps)]
    fraction = _fraction(flags)
    known = fraction[np.isfinite(fraction)]
    censored = ""
    if known.size and known[0] <= 0.5:
        censored = "below"
    elif np.isnan(point):
        censored = "above"
    return dict(
        n_star=point,
        censored=censored,
        low=float(np.quantile(finite, 0.025)) if finite.size else np.nan,
        high=float(np.quantile(finite, 0.975)) if finite.size else np.nan,
        replicates=reps,
        finite_fraction=float(finite.size / reps.size),
        fraction=fraction,
    )


def compare_methods(config: ThresholdConfig, flows: xr.Dataset, *, progress=False) -> xr.Dataset:
    """Gradient descent, Adam and the GELU flow on the data and inits of the first
    `compare_seeds` seeds of the ReLU flows in `flows` (dimension `compare_dim`, width
    `compare_width`), at `compare_sizes`.

    Descent runs `descent_t1 / learning_rate` steps ($t = k\\eta$); Adam the same number
    of steps of size `adam_learning_rate`. The GELU flow is `gradient_flow` with
    `stationarity_tol` from the same init (activation swapped), its test loss a Monte
    Carlo estimate on `test_samples` fresh points."""
    dim, width = config.compare_dim, config.compare_width
    sizes, num_seeds = config.compare_sizes, config.compare_seeds
    n_max = max(sizes)
    beta, sigma2 = config.beta(dim), config.noise**2
    methods = ("flow", "gd", "adam", "gelu_flow")
    names = ("train_mse", "test_mse", "distance_to_ols", "interpolating", "distance_to_flow")
    out = {k: np.full((len(sizes), num_seeds, len(methods)), np.nan) for k in names}
    seconds = dict.fromkeys(methods[1:], 0.0)
    rng = np.random.default_rng([config.seed, 7, dim])
    x_test = ms.sample_inputs(rng, config.test_samples, dim, config.inputs)
    seeds_run = config.seeds_at(width)
    keys = run_keys(config, dim, width, sizes, seeds_run)
    import time

    for i, n in enumerate(sizes):
        for s in range(num_seeds):
            x, y = config.data(dim, n, s)
            px, py, pw = gf.pad_samples(n_max, x, y)
            key = keys[i * seeds_run + s]
            net = jax.tree_util.tree_map(
                lambda v: v[0], initial_nets(config, dim, width, key[None])
            )
            flow = flows.sel(n=n, seed=s)
            # The end state (a run stopped before t1 has NaN at the later save times).
            W_flow = flow["W_end"].values
            a_flow = flow["a_end"].values
            ols = ms.ols_fit(x, y)
            ends = {"flow": (a_flow, W_flow)}
            for method in methods[1:]:
                start = time.perf_counter()
                if method == "gelu_flow":
                    gnet = gf.TwoLayerNet(net.a, net.W, None, gf.GELU())
                    sol = gf.gradient_flow(
                        gnet,
                        px,
                        py,
                        weights=pw,
                        t1=config.t1,
                        stationarity_tol=config.stationarity_tol,
                        max_steps=200_000,
                    )
                else:
                    optimizer = optax.adam(config.adam_learning_rate) if method == "adam" else None
                    sol = gf.gradient_descent(
                        net,
                        px,
                        py,
                        weights=pw,
                        learning_rate=config.learning_rate,
                        t1=config.descent_t1,
                        optimizer=optimizer,
                    )
                a, W = np.asarray(sol.net.a), np.asarray(sol.net.W)
                seconds[method] += time.perf_counter() - start
                ends[method] = (a, W)
            for j, method in enumerate(methods):
                a, W = ends[method]
                if method == "gelu_flow":
                    act = gf.GELU()

                    def f(z, a=a, W=W, act=act):
                        return np.asarray(act(z @ W.T)) @ a

                    out["train_mse"][i, s, j] = ms.train_mse(f(x), y)
                    out["test_mse"][i, s, j] = np.mean((f(x_test) - x_test @ beta) ** 2) + sigma2
                    out["distance_to_ols"][i, s, j] = np.sqrt(
                        np.mean((f(x_test) - x_test @ ols) ** 2)
                    )
                    out["distance_to_flow"][i, s, j] = np.sqrt(
                        np.mean((f(x_test) - ms.relu_net(a_flow, W_flow, x_test)) ** 2)
                    )
                else:
                    out["train_mse"][i, s, j] = ms.train_mse(ms.relu_net(a, W, x), y)
                    out["test_mse"][i, s, j] = (
                        ms.function_distance(a, W, beta, inputs=config.inputs) ** 2 + sigma2
                    )
                    out["distance_to_ols"][i, s, j] = ms.function_distance(
                        a, W, ols, inputs=config.inputs
                    )
                    # ‖f − f_flow‖ in L²(P_x) by Monte Carlo (two nets: no closed form here).
                    out["distance_to_flow"][i, s, j] = np.sqrt(
                        np.mean(
                            (ms.relu_net(a, W, x_test) - ms.relu_net(a_flow, W_flow, x_test)) ** 2
                        )
                    )
            out["interpolating"][i, s] = ms.is_interpolating(
                out["train_mse"][i, s], config.noise, config.interpolation_tol
            )
    return xr.Dataset(
        {k: (("n", "seed", "algorithm"), v) for k, v in out.items()},
        coords=dict(n=np.asarray(sizes), seed=np.arange(num_seeds), algorithm=list(methods)),
        attrs=dict(
            sigma2=sigma2,
            test_samples=config.test_samples,
            **{f"seconds_{k}": v for k, v in seconds.items()},
        ),
    )
