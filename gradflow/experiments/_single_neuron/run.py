"""Configuration → engine call → labelled result, for single-neuron target recovery."""

import hashlib
import pathlib
import pickle

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf

from .config import SingleNeuronConfig
from .measures import (
    _slope_at_zero,
    end_point_class,
    escape_time,
    generalisation_error,
    growing_mode,
    held_out_set,
    target_point,
)


def solver_of(config: SingleNeuronConfig):
    """The solver named by `config.solver`."""
    if config.solver == "default":
        return None  # `gradflow.default_solver` of the student
    if config.solver == "tsit5":
        return dfx.Tsit5()
    if config.solver == "two_phase":
        # Explicit steps while the flow is not stiff (the escape and the fit), the
        # Rosenbrock method below once it is.
        return gf.TwoPhase()
    # The Rosenbrock method: after the fit the flow is stiff (curvature ~5 next to slow
    # modes ~1e-3 and exactly flat directions) and converges only slowly, exponentially
    # with a small rate or algebraically (a dying neuron with a ≈ w → 0); an explicit
    # method's step stays ≲ 3.3/5 for ever, an L-stable one's grows with the time scale.
    return gf.Rodas5P()


def initial_net(config: SingleNeuronConfig, key, scale) -> gf.TwoLayerNet:
    """$\\theta_0$ of one run (`scale` may be traced): see `SingleNeuronConfig.init`."""
    kwargs = dict(dim=config.input_dim, scale=scale, activation=config.activation)
    if config.init == "near_target":
        noise = gf.random_net(key, width=config.width, **kwargs)
        base = target_point(config)
        return gf.TwoLayerNet(base.a + noise.a, base.W + noise.W, None, config.activation)
    if config.init == "balanced":
        return gf.random_net(key, width=config.width, distribution="sphere", **kwargs)
    if config.imbalance is not None and config.imbalance_by == "exact":
        prescribed = jnp.asarray(config.imbalance, jnp.float64) * scale**2
        return gf.net_with_imbalance(key, prescribed, **kwargs)
    if config.imbalance is not None:
        return _rescaled_to_ratio(config, key, kwargs)
    net = gf.random_net(key, width=config.width, **kwargs)
    if config.init == "zero_output":
        return gf.TwoLayerNet(jnp.zeros_like(net.a), net.W, None, config.activation)
    if config.init == "small_hidden":
        return gf.TwoLayerNet(net.a, 1e-3 * net.W, None, config.activation)
    # "gaussian"; "growing_mode" replaces this draw once the data are known.
    return net


# Draws of a seed's key tried for `imbalance_by="rescale"`: a draw fits when every C_k
# has the sign of imbalance[k]/imbalance[0]·C_1; for two Gaussian neurons in two input
# coordinates about half of the draws do, so 64 tries leave ~1e-19 to chance.
_RESCALE_TRIES = 64


def _rescaled_to_ratio(config: SingleNeuronConfig, key, kwargs) -> gf.TwoLayerNet:
    """The paper's way of prescribing $C_k/C_1$ (Fig. 2): draw $\\theta_0$, then scale
    each neuron $k \\ge 2$ as a whole by $r_k$, so $C_k \\to r_k^2 C_k$ hits the ratio.
    Neuron 1 and every direction are as drawn, so $\\alpha_1/\\alpha_2$ is not fixed."""
    ratio = jnp.asarray(config.imbalance, jnp.float64)
    ratio = ratio / ratio[0]

    def draw(i):
        # The scale as a value of the loop (a tracer): `random_net` checks a concrete
        # scale with Python control flow, which the loop's trace cannot run.
        scale = jnp.asarray(kwargs["scale"], jnp.float64) + jnp.zeros_like(i, jnp.float64)
        net = gf.random_net(
            jax.random.fold_in(key, i), width=config.width, **{**kwargs, "scale": scale}
        )
        c = gf.imbalance(net)
        factor_sq = ratio * c[0] / c  # r_k² = (C_k/C_1 wanted) · C_1 / C_k
        return net, factor_sq

    def misses(i):
        _, factor_sq = draw(i)
        return (i < _RESCALE_TRIES) & ~jnp.all(factor_sq > 0)

    i = jax.lax.while_loop(misses, lambda i: i + 1, jnp.asarray(0))
    net, factor_sq = draw(i)
    factor = jnp.sqrt(jnp.where(factor_sq > 0, factor_sq, jnp.nan)).at[0].set(1.0)
    return gf.TwoLayerNet(net.a * factor, net.W * factor[:, None], None, config.activation)


def growing_mode_net(config: SingleNeuronConfig, ratio, scale, x, y) -> gf.TwoLayerNet:
    """The pure unstable mode at the origin for `init="growing_mode"`: neuron 1
    $= \\varepsilon\\,r\\,(1, \\hat g)/\\sqrt2$, neuron 2 $= \\varepsilon\\,(1, \\hat g)/\\sqrt2$,
    $\\hat g = g/\\|g\\|$, $g = \\operatorname{sign}\\sigma'(0)\\sum_i y_i x_i$ (zero-weight
    padding has $y_i = 0$)."""
    g = jnp.asarray(y) @ jnp.asarray(x)
    sigma = gf.get_activation(config.activation)
    slope = jax.grad(lambda z: sigma(z))(jnp.zeros((), g.dtype))
    g_hat = jnp.sign(slope) * g / jnp.linalg.norm(g)
    amplitude = scale * jnp.stack([ratio, jnp.ones_like(ratio)]) / jnp.sqrt(2.0)
    return gf.TwoLayerNet(amplitude, amplitude[:, None] * g_hat[None, :], None, config.activation)


def grid_data(config: SingleNeuronConfig):
    """Training data of every (n, seed), padded to `max(sizes)` with zero-weight points:
    `x (sizes, seeds, n_max, d)`, `y` and `weights (sizes, seeds, n_max)`. For the
    interval design, and for `init="growing_mode"`, every seed has the same data."""
    n_max = max(config.sizes)
    # Gaussian inputs are drawn per seed, except for `init="growing_mode"`, whose seeds
    # are the points of a ratio scan on one data set (seed 0's).
    per_seed = config.design == "gaussian" and config.init != "growing_mode"
    seeds = range(config.num_seeds) if per_seed else [0]
    x = np.zeros((len(config.sizes), len(seeds), n_max, config.input_dim))
    w = np.zeros((len(config.sizes), len(seeds), n_max))
    for i, n in enumerate(config.sizes):
        for j, seed in enumerate(seeds):
            x[i, j, :n] = config.inputs(config.raw_inputs(n, seed))
            w[i, j, :n] = 1.0
    y = np.asarray(config.target(jnp.asarray(x))) * w
    if not per_seed:
        x, y, w = (np.repeat(v, config.num_seeds, axis=1) for v in (x, y, w))
    return x, y, w


def run(config: SingleNeuronConfig, *, progress: bool = False, checkpoint_dir=None):
    """Runs the gradient flow of every point of the grid `sizes` × `scales` × seed of
    `config` (compiled, vmapped `gradflow.flow_ensemble` calls, one per chunk of runs)
    and measures each run.

    **Returns:** an `xarray.Dataset` with dimensions `(n, scale, seed)` (plus `time`,
    `neuron`, `feature`), holding what `gradflow.to_dataset` stores (loss over time,
    final `a`, `W`, `t_stop`, `status`, ...) and, per run:

    - `a0`, `W0`: the initial parameters;
    - `initial_imbalance` $C(\\theta_0)$ and `normalised_imbalance`
      $C(\\theta_0)/\\|C(\\theta_0)\\|$ (over `neuron`);
    - `growing_mode`: each neuron's amplitude $\\alpha_k$ on the unstable mode at the
      origin (see `growing_mode`), and `growth_rate`
      $\\lambda = |\\sigma'(0)|\\,\\|\\sum_i y_i x_i\\|$ of the run's data;
    - `generalisation_error` (on `held_out_set`), `recovered` (error below
      `recovery_threshold` and the run succeeded);
    - `target_set`: $k$ for $Q^k$, $-1$ shared, $0$ not recovered (`end_point_class`),
      and `num_active` neurons;
    - `escape_time`: the first time the loss is below `escape_fraction` of its start.

    `attrs` hold the configuration's fields.
    """
    return run_many([config], progress=progress, checkpoint_dir=checkpoint_dir)[0]


def _engine_settings(config: SingleNeuronConfig) -> tuple:
    # Everything that shapes the compiled program other than the number of data points.
    return (
        type(gf.get_activation(config.activation)),
        config.width,
        config.input_dim,
        config.t1,
        config.num_times,
        config.t_min,
        config.rtol,
        config.loss_tol,
        config.stationarity_tol,
        config.solver,
        config.max_steps,
        config.chunk_size,
    )


def run_many(configs, *, progress: bool = False, checkpoint_dir=None) -> list:
    """`run` for several configurations, with as few compilations as possible: all
    configurations that share the student (activation, width, input dimension) and the
    solver settings (`t1`, save times, `rtol`, `loss_tol`, `solver`, `max_steps`,
    `chunk_size`) go through **one** `flow_ensemble` call, their data padded to a
    common number of points with zero-weight samples (which the loss ignores exactly).
    Compilation costs more than many of the small grids of a paper reproduction.

    With `checkpoint_dir`, each finished configuration's dataset is kept there
    (`datasets/<tag>.pkl`, the tag naming the configuration by a digest of its fields)
    and reused by any later call, and each compiled call keeps its finished chunks.

    **Returns:** one dataset per configuration, in order.
    """
    configs = list(configs)
    for i, config in enumerate(configs):
        if not isinstance(config, SingleNeuronConfig):
            raise TypeError(f"`configs[{i}]` must be a `SingleNeuronConfig`, got {type(config)}.")
    out = [None] * len(configs)
    done = None
    if checkpoint_dir is not None:
        # Finished configurations are kept whole (their labelled datasets), so a rerun
        # after adding or changing a configuration runs only what is new.
        done = pathlib.Path(checkpoint_dir) / "datasets"
        done.mkdir(parents=True, exist_ok=True)
        for i, config in enumerate(configs):
            path = done / f"{_config_tag(config)}.pkl"
            if path.exists():
                with open(path, "rb") as file:
                    out[i] = pickle.load(file)
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        if out[i] is None:
            groups.setdefault(_engine_settings(config), []).append(i)
    for members in groups.values():
        batches = [_initial_batch(configs[i]) for i in members]
        n_max = max(b[1].shape[1] for b in batches)
        nets = jax.tree_util.tree_map(lambda *v: jnp.concatenate(v), *[b[0] for b in batches])
        padded = zip(*(gf.pad_samples(n_max, *b[1:]) for b in batches))
        x, y, w = (jnp.asarray(np.concatenate(v)) for v in padded)
        config = configs[members[0]]
        # One folder of chunks per compiled call, named by its configurations: an
        # interrupted call resumes from its finished chunks.
        directory = None
        if checkpoint_dir is not None:
            tags = "".join(_config_tag(configs[i]) for i in members)
            digest = hashlib.sha256(tags.encode()).hexdigest()[:12]
            name = f"{type(gf.get_activation(config.activation)).__name__}_m{config.width}"
            directory = f"{checkpoint_dir}/{name}_{config.solver}_t{config.t1:g}_{digest}"
        solution = gf.flow_ensemble(
            nets,
            x,
            y,
            weights=w,
            t1=config.t1,
            ts=gf.log_times(config.t1, config.num_times, t_min=config.t_min),
            reduction="sum",
            rtol=config.rtol,
            loss_tol=config.loss_tol,
            stationarity_tol=config.stationarity_tol,
            solver=solver_of(config),
            max_steps=config.max_steps,
            chunk_size=config.chunk_size,
            progress=progress,
            checkpoint_dir=directory,
        )
        start = 0
        for i, batch in zip(members, batches):
            stop = start + batch[1].shape[0]
            part = jax.tree_util.tree_map(lambda v: v[start:stop], solution)
            out[i] = _labelled(configs[i], part, batch)
            start = stop
            if done is not None:
                path = done / f"{_config_tag(configs[i])}.pkl"
                with open(path.with_suffix(".tmp"), "wb") as file:
                    pickle.dump(out[i], file)
                path.with_suffix(".tmp").replace(path)
    return out


_ADDED_LATER = ("stationarity_tol",)


def _config_tag(config: SingleNeuronConfig) -> str:
    """A readable, collision-safe file name for a configuration's checkpoints."""
    attrs = config_attrs(config)
    # Fields added after checkpoints were written leave the tag alone at their neutral
    # value, so those checkpoints stay valid (they ran without the field's effect).
    for name in _ADDED_LATER:
        if attrs[f"config_{name}"] == "None":
            del attrs[f"config_{name}"]
    text = repr(sorted(attrs.items(), key=lambda kv: kv[0]))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    name = type(gf.get_activation(config.activation)).__name__
    return f"{name}_m{config.width}_{config.design}_{config.init}_{digest}"


def _grid_of(config: SingleNeuronConfig) -> gf.Grid:
    """The runs of `config`: `sizes` × `scales` × `num_seeds` seeds from `seed`."""
    return gf.Grid(config.sizes, config.scales, config.num_seeds, config.seed)


def _initial_batch(config: SingleNeuronConfig):
    """Initial nets and padded data of every run, flattened over (n, scale, seed)."""
    grid = _grid_of(config)
    i_n, i_scale, i_seed = grid.points()
    scales = jnp.asarray(np.asarray(grid.scales)[i_scale])
    nets = _initial_nets(config, grid.keys()[i_seed], scales)
    x, y, w = (v[i_n, i_seed] for v in grid_data(config))
    if config.init == "growing_mode":
        ratios = jnp.asarray(config.mode_ratios, jnp.float64)[i_seed]
        nets = eqx.filter_jit(jax.vmap(lambda *v: growing_mode_net(config, *v)))(
            ratios, scales, jnp.asarray(x), jnp.asarray(y)
        )
    return nets, x, y, w


@eqx.filter_jit
def _initial_nets(config, keys, scales):
    return jax.vmap(lambda k, s: initial_net(config, k, s))(keys, scales)


@eqx.filter_jit
def _measure(nets, final, x, y, w, x_test, y_test, w_test, recovery_threshold, carry_tolerance):
    def one(net0, net, x, y, w):
        code, active = end_point_class(
            net,
            x_test,
            y_test,
            w_test,
            recovery_threshold=recovery_threshold,
            carry_tolerance=carry_tolerance,
        )
        return dict(
            imbalance=gf.imbalance(net0),
            growing_mode=growing_mode(net0, x, y * w),
            data_norm=jnp.linalg.norm((y * w) @ x),
            error=generalisation_error(net, x_test, y_test, w_test),
            code=code,
            active=active,
        )

    return jax.vmap(one)(nets, final, x, y, w)


def _labelled(config: SingleNeuronConfig, solution, batch):
    nets, x, y, w = batch
    grid = _grid_of(config)
    ds = grid.label(solution)

    def put(name, value, extra=()):
        value = np.asarray(value)
        ds[name] = (grid.dims + extra, value.reshape(grid.shape + value.shape[1:]))

    x_test, w_test = held_out_set(config)
    measured = _measure(
        nets,
        solution.net,
        jnp.asarray(x),
        jnp.asarray(y),
        jnp.asarray(w),
        x_test,
        config.target(x_test),
        w_test,
        config.recovery_threshold,
        config.carry_tolerance,
    )
    measured = {k: np.asarray(v) for k, v in measured.items()}
    put("a0", nets.a, ("neuron",))
    put("W0", nets.W, ("neuron", "feature"))
    c0 = measured["imbalance"]
    put("initial_imbalance", c0, ("neuron",))
    put("normalised_imbalance", c0 / np.linalg.norm(c0, axis=-1, keepdims=True), ("neuron",))
    put("growing_mode", measured["growing_mode"], ("neuron",))
    put("growth_rate", abs(float(_slope_at_zero(nets))) * measured["data_norm"])
    ok = np.asarray(solution.status) == 0
    err = measured["error"]
    put("generalisation_error", err)
    put("recovered", ok & (err < config.recovery_threshold))
    put("target_set", np.where(ok, measured["code"], 0))
    put("num_active", measured["active"])
    times = np.asarray(solution.ts).reshape(err.shape[0], -1)[0]
    put("escape_time", escape_time(times, solution.loss, config.escape_fraction))
    ds.attrs.update(config_attrs(config))
    ds["target_set"].attrs["codes"] = (
        "k = Q^k (neuron k alone carries the target); -1 = shared; 0 = not recovered"
    )
    return ds


def config_attrs(config: SingleNeuronConfig) -> dict:
    """The configuration as netCDF-storable attributes."""
    out = {}
    for field in config.__dataclass_fields__:
        value = getattr(config, field)
        if value is None:
            value = "None"
        elif isinstance(value, bool):
            value = int(value)
        elif isinstance(value, tuple):
            value = np.asarray(value)
        elif not isinstance(value, int | float | str):
            value = type(value).__name__
        out[f"config_{field}"] = value
    return out
