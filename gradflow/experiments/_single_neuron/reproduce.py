"""Every figure of Zhao, Bai & Zhang from one call: configurations → `run_many` →
summaries (the numbers) → figures, each PNG written beside its numbers."""

import dataclasses
import json
import pathlib
import platform
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf

from .config import SingleNeuronConfig
from .measures import (
    basin_boundaries,
    growth_rate,
    held_out_set,
    misplaced_runs,
    neuron_outputs,
    onset_of_class,
    optimistic_sample_size,
    threshold_size,
    time_shift_fit,
)
from .run import run_many


DESCRIPTION = "single-neuron target recovery: Zhao, Bai & Zhang, arXiv:2405.13787"
PAPER_BOUNDARIES = (1.35, 0.74)


class Reproduction(eqx.Module):
    """The experiments behind the paper's figures (defaults: full size).

    - `errors`: generalisation error vs $n$ per $\\varepsilon$, one configuration per
      data design (Fig. 1). The Gaussian one includes `tiny_scale` for Fig. 4.
    - `time_shift`: $n = 6$, $C_1/C_2 = 0.5$ prescribed the paper's way (neuron 2
      rescaled), several $\\varepsilon$ and seeds (Fig. 2).
    - `basin`: $n = 6$, $\\varepsilon = 10^{-8}$, many seeds (Fig. 3).
    - `init_families`: the basin experiment from other init distributions (`a = 0`,
      hidden layer ~0, balanced): does $|C_1/C_2|$ separate the basins for any of them?
    - `boundary`: scans of $\\alpha_1/\\alpha_2$ from the pure growing mode
      (`init="growing_mode"`), one per condition (n, ε, target, data, activation): where
      the $Q^1$ basin begins, and whether it moves.
    - `near_target`: inits near $Q^1$ over $n$ at two distances δ (the `scales`).
    - `wide`: width-1000 rational student, one configuration per (seed, scale) (Fig. 5).
    - `positive_fraction`: the one rule for every sample size reported: a run recovers
      when its generalisation error is below the configuration's
      `recovery_threshold` ($10^{-8}$); an init family recovers *from* $n$ when at
      least this fraction of its runs recover at $n$ and at every larger $n$ of the grid.
    """

    errors: tuple[SingleNeuronConfig, ...]
    tiny_scale: float
    time_shift: SingleNeuronConfig
    basin: SingleNeuronConfig
    init_families: tuple[SingleNeuronConfig, ...]
    boundary: tuple[tuple[str, SingleNeuronConfig], ...]
    near_target: SingleNeuronConfig
    wide: tuple[SingleNeuronConfig, ...]
    positive_fraction: float = 0.05


def mode_ratio_grid(num: int, top: float = 4.0) -> tuple[float, ...]:
    """`num` log-spaced ratios $\\alpha_1/\\alpha_2$ from 1 to `top`. Swapping the two
    neurons of a pure growing-mode init is an exact symmetry of the flow, so the scan
    of $r \\ge 1$ gives the boundary below 1 as its reciprocal."""
    return tuple(float(r) for r in np.geomspace(1.0, top, num))


def boundary_conditions(base: SingleNeuronConfig, quick: bool = False):
    """`(label, configuration)` of each scan of $\\alpha_1/\\alpha_2$: the reference
    (Example 1, $n = 6$, ε = 1e-8) and one change at a time."""
    ratios = mode_ratio_grid(8 if quick else 64)
    ref = dataclasses.replace(
        base,
        init="growing_mode",
        mode_ratios=ratios,
        num_seeds=len(ratios),
        sizes=(6,),
        scales=(1e-8,),
    )
    changes = {"reference (n=6, ε=1e-8, tanh(s+1), interval)": {}}
    if not quick:
        changes.update(
            {
                "n=4": dict(sizes=(4,)),
                "n=5": dict(sizes=(5,)),
                "n=8": dict(sizes=(8,)),
                "ε=1e-3": dict(scales=(1e-3,)),
                "ε=1e-14": dict(scales=(1e-14,)),
                "target tanh(s)": dict(target_w=(1.0, 0.0)),
                "target tanh(2s+1)": dict(target_w=(2.0, 1.0)),
                "target 2·tanh(s+1)": dict(target_a=2.0),
                "target 0.5·tanh(s+1)": dict(target_a=0.5),
                "interval [-3, 3]": dict(interval=(-3.0, 3.0)),
                "Gaussian inputs (one draw)": dict(design="gaussian"),
                "σ = erf, target erf(s+1)": dict(activation="erf"),
                # Two follow-ups of the scans above: the reference's onset to 0.1 %,
                # and the 2·tanh(s+1) target, whose Q¹ basin lies beyond 4.
                "reference, fine scan of 1.39–1.43": dict(
                    mode_ratios=tuple(float(r) for r in np.geomspace(1.39, 1.43, 33)),
                    num_seeds=33,
                ),
                "target 2·tanh(s+1), scan to 64": dict(
                    target_a=2.0,
                    mode_ratios=mode_ratio_grid(48, top=64.0),
                    num_seeds=48,
                ),
            }
        )
    return tuple((label, dataclasses.replace(ref, **change)) for label, change in changes.items())


def reproduction(quick: bool = False) -> Reproduction:
    """The full-size experiments, or with `quick=True` a CI-size version of each (same
    code paths, a few seeds, two compilations in all)."""
    # One set of solver settings for every width-2 experiment, so that they all share
    # one compiled program (see `run_many`). The late phase can be very slow: a small,
    # nearly balanced neuron dies at a rate set by how much of its (almost linear)
    # output the other neuron's tangent space cannot absorb on the data, and on Gaussian
    # inputs that is tiny. Measured (n = 6 and 8, Gaussian, ε = 1e-8, 50 seeds each):
    # recovered 44 % / 74 % at t1 = 1e6 but 98 % / 100 % at t1 = 1e10, the Rosenbrock
    # solver's steps growing only from 905 to 1639 per run on average. `TwoPhase` (the
    # engine's default) takes the escape and the fit explicitly: on 256 basin seeds it
    # ran in 3.1 s against Rodas5P's 6.5 s (compiled), the same class for every seed.
    base = SingleNeuronConfig(num_times=400, t1=1e10, loss_tol=1e-20)
    sizes = (2, 3, 6) if quick else (1, 2, 3, 4, 5, 6, 7, 8)
    seeds = 3 if quick else 50
    tiny = 1e-20
    interval = dataclasses.replace(
        base,
        sizes=sizes,
        scales=(1e-2, 1e-8) if quick else (1.0, 1e-1, 1e-2, 1e-4, 1e-8),
        num_seeds=seeds,
    )
    gaussian = dataclasses.replace(
        interval,
        design="gaussian",
        scales=(1e-2, tiny) if quick else (1.0, 1e-1, 1e-2, 1e-4, 1e-8, tiny),
    )
    time_shift = dataclasses.replace(
        base,
        sizes=(6,),
        scales=(1e-6, 1e-10) if quick else (1e-6, 1e-8, 1e-10, 1e-12, 1e-14),
        num_seeds=2 if quick else 8,
        imbalance=(0.5, 1.0),
        imbalance_by="rescale",
        seed=1,
    )
    basin = dataclasses.replace(
        base, sizes=(6,), scales=(1e-8,), num_seeds=12 if quick else 400, seed=2
    )
    init_families = tuple(
        dataclasses.replace(basin, init=init, seed=4 + i, num_seeds=6 if quick else 400)
        for i, init in enumerate(("zero_output", "small_hidden", "balanced"))
    )
    near_target = dataclasses.replace(
        base,
        init="near_target",
        sizes=sizes,
        scales=(1e-1, 1e-3),
        num_seeds=2 if quick else 20,
        seed=3,
    )
    width = 20 if quick else 1000
    wide_base = SingleNeuronConfig(
        activation="rational",
        target_activation="tanh",
        width=width,
        sizes=(6,),
        imbalance=tuple(1.5 + 0.0015 * i for i in range(width)),
        # To the limit: the engine's default for this width (a matrix-free implicit
        # late phase), stopped once stationary.
        solver="default",
        t1=200.0 if quick else 1e8,
        loss_tol=None,
        stationarity_tol=1e-10,
        num_times=200,
        t_min=1e-2,
        num_seeds=1,
    )
    wide_scales = (1e-6, 1e-10) if quick else (1e-6, 1e-8, 1e-10, 1e-12)
    wide = tuple(
        dataclasses.replace(wide_base, scales=(scale,), seed=10 + i)
        for i, scale in enumerate(wide_scales)
    )
    return Reproduction(
        errors=(interval, gaussian),
        tiny_scale=tiny,
        time_shift=time_shift,
        basin=basin,
        init_families=init_families,
        boundary=boundary_conditions(base, quick),
        near_target=near_target,
        wide=wide,
    )


# ------------------------------------------------------------------------ summaries


def error_table(ds):
    """Per (n, ε): mean and median generalisation error and the recovered fraction."""
    import pandas as pd

    err = ds["generalisation_error"]
    return pd.DataFrame(
        {
            "n": np.repeat(ds.n.values, ds.sizes["scale"]),
            "scale": np.tile(ds.scale.values, ds.sizes["n"]),
            "mean_error": err.mean("seed").values.ravel(),
            "median_error": err.median("seed").values.ravel(),
            "recovered": ds["recovered"].mean("seed").values.ravel(),
            "failed_runs": (ds["status"] != 0).sum("seed").values.ravel(),
        }
    )


def time_shift_summary(ds, config: SingleNeuronConfig, window=(-2.0, 30.0)) -> dict:
    """Fit of escape time = b_seed + s·log(1/ε) against the linearised growth rate λ, and
    how far the loss curves of one seed (over ε) and of different seeds (at one ε) stay
    apart after the shift $t \\to t - s\\log(1/\\varepsilon)$.

    The curve spreads are the largest gap in $\\log_{10}$ loss over shifted times in
    `window` (loss above $10^{-18}$, where every curve is defined): `within_seed` the
    largest over seeds of the gap between a seed's ε; `between_seeds` the smallest over
    ε of the gap between seeds. Per seed: $\\alpha_1/\\alpha_2$ and the classes reached.
    """
    (n,) = config.sizes
    one = ds.sel(n=n)
    escape = one["escape_time"].transpose("seed", "scale").values
    log_inv = np.log(1 / ds.scale.values)
    fit = time_shift_fit(
        np.broadcast_to(log_inv, escape.shape),
        escape,
        np.broadcast_to(ds.seed.values[:, None], escape.shape),
    )
    x, y = config.training_data(n)
    rate = growth_rate(config, x, y)
    c = one["initial_imbalance"].transpose("seed", "scale", "neuron").values
    alpha = one["growing_mode"].transpose("seed", "scale", "neuron").values
    ratio = c[..., 0] / c[..., 1]
    mode_ratio = alpha[..., 0] / alpha[..., 1]
    loss = one["loss"].transpose("seed", "scale", "time").values
    tau = np.linspace(*window, 321)
    curves = np.full(loss.shape[:2] + tau.shape, np.nan)
    for i in range(loss.shape[0]):
        for j in range(loss.shape[1]):
            shifted = ds.time.values - fit["slope"] * log_inv[j]
            ok = np.isfinite(loss[i, j]) & (loss[i, j] > 1e-18)
            curves[i, j] = np.interp(tau, shifted[ok], np.log10(loss[i, j, ok]), np.nan, np.nan)
    defined = np.all(np.isfinite(curves), axis=(0, 1))
    gap = lambda v, axis: np.max(np.ptp(v[..., defined], axis=axis), axis=-1)  # noqa: E731
    within = gap(curves, 1)  # per seed
    between = gap(curves, 0)  # per ε
    classes = one["target_set"].transpose("seed", "scale").values
    return dict(
        slope=fit["slope"],
        measured_rate=1 / fit["slope"],
        growth_rate=rate,
        relative_difference=abs(1 / fit["slope"] - rate) / rate,
        residual_rms=fit["residual_rms"],
        intercepts=fit["intercepts"].tolist(),
        intercept_spread=float(np.ptp(fit["intercepts"])),
        log_inverse_scale=log_inv.tolist(),
        escape_times=escape.tolist(),
        imbalance_ratio=float(np.median(ratio)),
        imbalance_ratio_max_deviation=float(np.max(np.abs(ratio - np.median(ratio)))),
        mode_ratio_per_seed=mode_ratio[:, 0].tolist(),
        mode_ratio_max_deviation_over_scales=float(np.max(np.ptp(mode_ratio, axis=1))),
        classes_per_seed=[sorted({int(v) for v in row}) for row in classes],
        window=list(window),
        window_compared=[float(tau[defined].min()), float(tau[defined].max())]
        if defined.any()
        else None,
        log10_loss_gap_within_seed=within.tolist(),
        log10_loss_gap_between_seeds=between.tolist(),
        max_gap_within_seed=float(np.max(within)),
        min_gap_between_seeds=float(np.min(between)),
        shifted_log10_loss=curves,
        shifted_time=tau,
    )


def time_shift_table(ds, summary: dict):
    """Per (seed, ε): the prescribed ratio, α₁/α₂, escape time, class, error."""
    import pandas as pd

    one = ds.isel(n=0)
    rows = []
    for i, seed in enumerate(ds.seed.values):
        for j, scale in enumerate(ds.scale.values):
            run = one.sel(seed=seed, scale=scale)
            c, a = run["initial_imbalance"].values, run["growing_mode"].values
            rows.append(
                dict(
                    seed=int(seed),
                    scale=float(scale),
                    C1_over_C2=c[0] / c[1],
                    alpha1_over_alpha2=a[0] / a[1],
                    escape_time=float(run["escape_time"]),
                    shifted_escape_time=float(run["escape_time"])
                    - summary["slope"] * np.log(1 / scale),
                    target_set=int(run["target_set"]),
                    generalisation_error=float(run["generalisation_error"]),
                )
            )
    return pd.DataFrame(rows)


def basin_table(ds):
    import pandas as pd

    one = ds.isel(n=0, scale=0)
    c = one["initial_imbalance"].values
    alpha = one["growing_mode"].values
    return pd.DataFrame(
        {
            "seed": one.seed.values,
            "C1": c[:, 0],
            "C2": c[:, 1],
            "imbalance_ratio": np.abs(c[:, 0] / c[:, 1]),
            "alpha1": alpha[:, 0],
            "alpha2": alpha[:, 1],
            "growing_mode_ratio": np.abs(alpha[:, 0] / alpha[:, 1]),
            "norm_sq": np.sum(one["a0"].values ** 2, axis=-1)
            + np.sum(one["W0"].values ** 2, axis=(-2, -1)),
            "target_set": one["target_set"].values,
            "generalisation_error": one["generalisation_error"].values,
            "status": one["status"].values,
        }
    )


def basin_summary(table) -> dict:
    """Where the classes separate along each ratio: the pure stretches at both ends
    (`basin_boundaries`) and the fewest runs any two boundaries misplace
    (`misplaced_runs`); and which classes the paper's bands along |C₁/C₂| hold here."""
    out = {
        column: basin_boundaries(table[column], table["target_set"])
        for column in ("imbalance_ratio", "growing_mode_ratio")
    }
    for column in ("imbalance_ratio", "growing_mode_ratio"):
        out[column]["best_rule"] = misplaced_runs(table[column], table["target_set"])
    upper, lower = PAPER_BOUNDARIES
    r = table["imbalance_ratio"]
    bands = {
        f"above_{upper}": r > upper,
        f"between_{lower}_and_{upper}": (r >= lower) & (r <= upper),
        f"below_{lower}": r < lower,
    }
    counts = {}
    for name, mask in bands.items():
        values, number = np.unique(table["target_set"][mask], return_counts=True)
        counts[name] = {int(v): int(k) for v, k in zip(values, number)}
    out["paper_bands_class_counts"] = counts
    values, number = np.unique(table["target_set"], return_counts=True)
    out["class_counts"] = {int(v): int(k) for v, k in zip(values, number)}
    out["paper"] = dict(upper=upper, lower=lower)
    # Balanced inits have C = 0 up to rounding (relative to ‖θ‖²): no ratio to speak of.
    c = np.abs(table[["C1", "C2"]].values)
    out["max_abs_imbalance"] = float(np.max(c))
    out["imbalance_defined"] = bool(np.min(np.max(c, axis=1) / table["norm_sq"]) > 1e-12)
    if not out["imbalance_defined"]:
        out["imbalance_ratio"]["best_rule"]["misplaced"] = None
    return out


def boundary_summary(datasets: dict) -> dict:
    """Per scan of $\\alpha_1/\\alpha_2$ (pure growing-mode inits): where the $Q^1$
    basin begins (`onset_of_class`), against $\\sqrt2$."""
    out = {}
    for label, ds in datasets.items():
        one = ds.isel(n=0, scale=0)
        alpha = one["growing_mode"].values
        ratio = np.abs(alpha[:, 0] / alpha[:, 1])
        onset = onset_of_class(ratio, one["target_set"].values)
        onset["relative_to_sqrt2"] = onset["boundary"] / np.sqrt(2) - 1
        onset["n"] = int(ds.n.values[0])
        onset["scale"] = float(ds.scale.values[0])
        onset["failed_runs"] = int((one["status"] != 0).sum())
        out[label] = onset
    return out


def boundary_table(summary: dict):
    import pandas as pd

    rows = []
    for label, b in summary.items():
        rows.append(
            dict(
                condition=label,
                n=b["n"],
                scale=b["scale"],
                boundary=b["boundary"],
                resolution_factor=b["resolution"],
                relative_to_sqrt2=b["relative_to_sqrt2"],
                classes_below=" ".join(f"{k}:{v}" for k, v in b["classes"].items()),
                failed_runs=b["failed_runs"],
            )
        )
    return pd.DataFrame(rows)


def run_table(name: str, ds):
    """One row per run of an experiment: its grid point, the initial ratios (width 2),
    and what it reached: the compact table behind every number of `summary.txt`."""
    import pandas as pd

    flat = ds.stack(run=("n", "scale", "seed"))
    frame = dict(
        experiment=name,
        n=flat.n.values,
        scale=flat.scale.values,
        seed=flat.seed.values,
    )
    if ds.sizes["neuron"] == 2:
        c = flat["initial_imbalance"].transpose("run", "neuron").values
        a = flat["growing_mode"].transpose("run", "neuron").values
        frame.update(C1=c[:, 0], C2=c[:, 1], alpha1=a[:, 0], alpha2=a[:, 1])
    else:
        frame.update(C1=np.nan, C2=np.nan, alpha1=np.nan, alpha2=np.nan)
    for column in (
        "generalisation_error",
        "recovered",
        "target_set",
        "num_active",
        "status",
        "stop_reason",
        "t_stop",
        "final_loss",
        "escape_time",
    ):
        frame[column] = flat[column].values
    frame["recovered"] = frame["recovered"].astype(int)
    return pd.DataFrame(frame)


def recovery_rule(ds, level: float) -> dict:
    """The one rule of `Reproduction.positive_fraction`, per ε: the fraction recovered
    at each $n$ and the smallest $n$ from which it stays at least `level`."""
    out = {}
    for scale in ds.scale.values:
        p = ds["recovered"].sel(scale=scale).mean("seed")
        out[f"{scale:g}"] = dict(
            probability=dict(zip(ds.n.values.tolist(), p.values.tolist())),
            recovers_from=threshold_size(ds.n.values, p.values, level),
        )
    return out


def early_recoveries(ds, design: str, separation: float) -> list:
    """Runs that recovered at a size below `separation` (at any ε): the outliers the
    separation sample size leaves out, with their data."""
    out = []
    hits = ds["recovered"].where(ds.n < separation, False)
    for n, scale, seed in zip(*np.nonzero(hits.transpose("n", "scale", "seed").values)):
        run = ds.isel(n=n, scale=scale, seed=seed)
        out.append(
            dict(
                design=design,
                n=int(run.n),
                scale=float(run.scale),
                seed=int(run.seed),
                generalisation_error=float(run["generalisation_error"]),
                target_set=int(run["target_set"]),
                a=run["a"].values.tolist(),
                W=run["W"].values.tolist(),
            )
        )
    return out


def wide_summary(datasets, config: SingleNeuronConfig):
    """Per run and neuron: the prescribed C_i/C_1 and the RMS of the neuron's output
    at the end; the active neurons of each run."""
    import pandas as pd

    x_test, w_test = held_out_set(config)
    ratios = np.asarray(config.imbalance) / config.imbalance[0]
    rows, active = [], {}
    for ds in datasets:
        one = ds.isel(n=0, scale=0, seed=0)
        run = f"ε={float(one.scale):g}"
        net = jax.tree_util.tree_map(jnp.asarray, _final_net(one, config))
        rms = np.sqrt(np.asarray(w_test @ neuron_outputs(net, x_test) ** 2))
        rows.append(
            pd.DataFrame(
                dict(run=run, neuron=np.arange(len(rms)), imbalance_ratio=ratios, output_rms=rms)
            )
        )
        total = np.sqrt(float(w_test @ config.target(x_test) ** 2))
        on = np.nonzero(rms > config.carry_tolerance * total)[0]
        active[run] = dict(
            neurons=on.tolist(),
            imbalance_ratios=ratios[on].tolist(),
            generalisation_error=float(one["generalisation_error"]),
            final_loss=float(one["final_loss"]),
            t_stop=float(one["t_stop"]),
            stationary=bool(one["stop_reason"] == 2),
        )
    return pd.concat(rows, ignore_index=True), active


def _final_net(one, config):
    return gf.TwoLayerNet(one["a"].values, one["W"].values, None, config.activation)


def _curves(datasets, label_by_config_seed=False):
    """`(time, loss, ε, seed)` of every run of the first size of each dataset; the seed
    is the configuration's `seed` where each configuration holds one run."""
    curves = []
    for ds in datasets:
        for scale in ds.scale.values:
            for seed in ds.seed.values:
                loss = ds["loss"].sel(scale=scale, seed=seed).isel(n=0).values
                label = int(ds.attrs["config_seed"]) if label_by_config_seed else int(seed)
                curves.append((ds.time.values, loss, float(scale), label))
    return curves


# ------------------------------------------------------------------------ driver


def reproduce(
    out_dir="single-neuron",
    *,
    quick: bool = False,
    progress: bool = True,
    experiments: Reproduction | None = None,
    checkpoint_dir=None,
    save_datasets: bool = True,
    command: str | None = None,
) -> dict:
    """Runs every experiment of `experiments` (default `reproduction(quick)`) and writes
    into `out_dir`, for each figure `NAME.png` with its numbers `NAME.csv` / `NAME.json`,
    plus `summary.json` and `summary.txt`; with `save_datasets`, every run's labelled
    dataset as `datasets/EXPERIMENT.nc` (netCDF, for `xarray.open_dataset`). `command`,
    the command line that made them, is recorded in `summary.json`.

    **Returns:** the summary (thresholds, basin boundaries, slope, wall time, ...).
    """
    import pandas as pd

    from .figures import (
        _pyplot,
        basin_figure,
        boundary_figure,
        gaussian_tiny_init_figure,
        generalisation_error_figure,
        thresholds_figure,
        time_shift_figure,
        wide_rational_figure,
    )

    e = experiments or reproduction(quick)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    start = time.perf_counter()
    from .run import _config_tag

    boundary_labels = [label for label, _ in e.boundary]
    configs = [
        *e.errors,
        e.time_shift,
        e.basin,
        e.near_target,
        *e.init_families,
        *(config for _, config in e.boundary),
        *e.wide,
    ]
    from_checkpoint = 0
    if checkpoint_dir is not None:
        done = pathlib.Path(checkpoint_dir) / "datasets"
        from_checkpoint = sum((done / f"{_config_tag(c)}.pkl").exists() for c in configs)
    datasets = run_many(configs, progress=progress, checkpoint_dir=checkpoint_dir)
    run_seconds = time.perf_counter() - start
    parts = iter(datasets)
    errors = {c.design: next(parts) for c in e.errors}
    ds_shift, ds_basin, ds_near = next(parts), next(parts), next(parts)
    ds_families = {c.init: next(parts) for c in e.init_families}
    ds_boundary = {label: next(parts) for label in boundary_labels}
    ds_wide = list(parts)
    names = ["errors_" + c.design for c in e.errors] + ["time_shift", "basin", "near_target"]
    names += [f"basin_{c.init}" for c in e.init_families]
    names += [f"boundary_{i}" for i in range(len(e.boundary))]
    names += [f"wide_{i}" for i in range(len(e.wide))]
    saved_datasets = False
    if save_datasets:
        (out / "datasets").mkdir(exist_ok=True)
        try:
            for name, ds in zip(names, datasets):
                # netCDF has no booleans.
                ds.assign(recovered=ds["recovered"].astype(np.int8)).to_netcdf(
                    out / "datasets" / f"{name}.nc"
                )
            saved_datasets = True
        except (ImportError, ValueError) as error:
            # xarray writes netCDF through netCDF4 or SciPy, neither a gradflow dependency.
            print(f"datasets not saved ({error}); `pip install scipy` to save them.")

    def save(fig, name):
        fig.savefig(out / f"{name}.png", dpi=120)
        plt.close(fig)

    def dump(obj, name):
        (out / f"{name}.json").write_text(json.dumps(obj, indent=2, default=float) + "\n")

    summary: dict = dict(paper="Zhao, Bai & Zhang, arXiv:2405.13787", quick=quick)

    # Fig. 1: generalisation error vs n per ε, both designs.
    tables = {design: error_table(ds) for design, ds in errors.items()}
    for design, table in tables.items():
        table.insert(0, "design", design)
    pd.concat(tables.values()).to_csv(
        out / "generalisation_error.csv", index=False, float_format="%.8g"
    )
    save(generalisation_error_figure(tables), "generalisation_error")

    # Fig. 2: the time shift, C₁/C₂ = 0.5 prescribed the paper's way.
    shift = time_shift_summary(ds_shift, e.time_shift)
    curves = (shift.pop("shifted_time"), shift.pop("shifted_log10_loss"))
    dump(shift, "time_shift")
    time_shift_table(ds_shift, shift).to_csv(
        out / "time_shift.csv", index=False, float_format="%.8g"
    )
    save(time_shift_figure(_curves([ds_shift]), shift, curves), "time_shift")
    summary["time_shift"] = {
        k: shift[k]
        for k in (
            "slope",
            "measured_rate",
            "growth_rate",
            "relative_difference",
            "residual_rms",
            "imbalance_ratio",
            "intercept_spread",
            "mode_ratio_per_seed",
            "classes_per_seed",
            "max_gap_within_seed",
            "min_gap_between_seeds",
        )
    }
    summary["time_shift"]["num_seeds"] = int(ds_shift.sizes["seed"])
    summary["time_shift"]["scales"] = ds_shift.scale.values.tolist()

    # Fig. 3: basins at n = 6, ε = 1e-8, from the paper's init and three others.
    table = basin_table(ds_basin)
    table.to_csv(out / "basin.csv", index=False, float_format="%.8g")
    basin = basin_summary(table)
    dump(basin, "basin")
    summary["basin"] = basin
    families = {"gaussian": (table, basin)}
    for init, ds in ds_families.items():
        t = basin_table(ds)
        t.insert(0, "init", init)
        families[init] = (t, basin_summary(t))
    pd.concat([t for t, _ in list(families.values())[1:]]).to_csv(
        out / "init_families.csv", index=False, float_format="%.8g"
    )
    summary["init_families"] = {
        init: dict(
            class_counts=b["class_counts"],
            max_abs_imbalance=b["max_abs_imbalance"],
            **{
                f"{column}_best_rule": b[column]["best_rule"]
                for column in ("imbalance_ratio", "growing_mode_ratio")
            },
        )
        for init, (_, b) in families.items()
    }
    dump(summary["init_families"], "init_families")
    save(basin_figure(families), "basin")

    # The boundary along α₁/α₂ in the ε → 0 limit: scans from the pure growing mode.
    boundary = boundary_summary(ds_boundary)
    dump(boundary, "boundary")
    boundary_table(boundary).to_csv(out / "boundary.csv", index=False, float_format="%.6g")
    save(boundary_figure(ds_boundary, boundary), "boundary")
    summary["boundary"] = {
        label: dict(boundary=b["boundary"], resolution=b["resolution"], classes=b["classes"])
        for label, b in boundary.items()
    }

    # Fig. 4: Gaussian inputs at the tiny init scale.
    gauss = errors["gaussian"].sel(scale=e.tiny_scale)
    g_table = (
        gauss["generalisation_error"]
        .to_dataframe()
        .reset_index()[["n", "seed", "generalisation_error"]]
    )
    g_table.to_csv(out / "gaussian_tiny_init.csv", index=False, float_format="%.8g")
    threshold = e.errors[1].recovery_threshold
    save(gaussian_tiny_init_figure(g_table, e.tiny_scale, threshold), "gaussian_tiny_init")

    # Fig. 5: the wide rational student.
    wide_config = e.wide[0]
    neurons, active = wide_summary(ds_wide, wide_config)
    neurons.to_csv(out / "wide_rational.csv", index=False, float_format="%.8g")
    x6, y6 = wide_config.training_data(wide_config.sizes[0])
    wide_rate = growth_rate(wide_config, x6, y6)
    dump(dict(growth_rate=wide_rate, runs=active), "wide_rational")
    save(wide_rational_figure(_curves(ds_wide, True), neurons, 1 / wide_rate), "wide_rational")
    summary["wide_rational"] = {run: v["neurons"] for run, v in active.items()}
    summary["wide_rational_stops"] = {
        run: dict(t_stop=v["t_stop"], stationary=v["stationary"], final_loss=v["final_loss"])
        for run, v in active.items()
    }
    summary["wide_rational_t1"] = wide_config.t1

    # Sample sizes, all by one rule (`Reproduction.positive_fraction`).
    level = e.positive_fraction
    rows, rules = [], {}
    for design, ds in errors.items():
        rules[design] = recovery_rule(ds, level)
        for scale, rule in rules[design].items():
            for n, value in rule["probability"].items():
                rows.append((design, "random", float(scale), int(n), value))
    rules["near_target"] = recovery_rule(ds_near, level)
    for scale, rule in rules["near_target"].items():
        for n, value in rule["probability"].items():
            rows.append(("interval", "near Q¹", float(scale), int(n), value))
    p_table = pd.DataFrame(rows, columns=["design", "init", "scale", "n", "probability"])
    p_table.to_csv(out / "thresholds.csv", index=False, float_format="%.8g")
    separation = {
        design: rules[design][f"{ds.scale.values.min():g}"]["recovers_from"]
        for design, ds in errors.items()
    }
    outliers = [
        run
        for design, ds in errors.items()
        for run in early_recoveries(ds, design, separation[design])
    ]
    thresholds = dict(
        rule=f"a run recovers when its generalisation error is below "
        f"{e.errors[0].recovery_threshold:g}; an init family recovers from n when at least "
        f"{level:g} of its runs recover at n and at every larger n of the grid",
        optimistic_sample_size_tangent_rank=optimistic_sample_size(e.errors[0]),
        near_target_recovers_from={k: v["recovers_from"] for k, v in rules["near_target"].items()},
        separation_sample_size=separation,
        recovers_from={
            design: {k: v["recovers_from"] for k, v in r.items()} for design, r in rules.items()
        },
        positive_fraction=level,
        smallest_scale={d: float(ds.scale.values.min()) for d, ds in errors.items()},
        recovered_below_separation=outliers,
    )
    dump(thresholds, "thresholds")
    save(thresholds_figure(p_table, thresholds), "thresholds")
    summary.update({k: v for k, v in thresholds.items() if k != "recovered_below_separation"})
    summary["recovered_below_separation"] = [
        {k: v for k, v in run.items() if k not in ("a", "W")} for run in outliers
    ]

    # Every run, one row each: the table behind every number above.
    pd.concat([run_table(name, ds) for name, ds in zip(names, datasets)]).to_csv(
        out / "runs.csv", index=False, float_format="%.6g"
    )

    summary["datasets"] = str(out / "datasets") if saved_datasets else None
    summary["runs"] = int(sum(ds["status"].size for ds in datasets))
    summary["failed_runs"] = int(sum(int((ds["status"] != 0).sum()) for ds in datasets))
    # Runs that used all of t1 without reaching `loss_tol` (not necessarily unconverged:
    # the wide rational student cannot fit its labels exactly).
    summary["runs_reaching_t1"] = {
        name: int(((ds["stop_reason"] == 0) & (ds["status"] == 0)).sum())
        for name, ds in zip(names, datasets)
    }
    summary["run_seconds"] = run_seconds
    # With a checkpoint directory, finished chunks are loaded, not rerun: the times then
    # describe this call, not the flows.
    summary["checkpoint_dir"] = None if checkpoint_dir is None else str(checkpoint_dir)
    summary["configurations"] = len(configs)
    summary["configurations_from_checkpoint"] = from_checkpoint
    summary["wall_seconds"] = time.perf_counter() - start
    summary["machine"] = f"{platform.platform()}, {jax.default_backend()}"
    summary["command"] = command or (
        f"gradflow reproduce single-neuron{' --quick' if quick else ''}"
    )
    dump(summary, "summary")
    (out / "summary.txt").write_text(summary_text(summary) + "\n")
    return summary


def summary_text(summary: dict) -> str:
    """The headline numbers in a few lines; each is in `summary.json` and comes from a
    table written beside it (named in brackets)."""
    shift, basin = summary["time_shift"], summary["basin"]
    c, a = basin["imbalance_ratio"], basin["growing_mode_ratio"]

    def rule(b):
        r = b["best_rule"]
        return (
            f"{r['misplaced']} of {r['total']} misplaced "
            f"(best boundaries {r['lower']:.3g} / {r['upper']:.3g})"
        )

    def fmt(v):
        return "none" if not np.isfinite(v) else f"{v:g}"

    near = ", ".join(
        f"δ={k}: n = {fmt(v)}" for k, v in summary["near_target_recovers_from"].items()
    )
    groups: dict = {}
    for r in summary["recovered_below_separation"]:
        groups.setdefault((r["design"], r["scale"], r["n"]), []).append(r)
    outliers = "; ".join(
        f"{design} ε={scale:g} n={n}: "
        + (
            f"{len(runs)} runs"
            if len(runs) > 2
            else ", ".join(
                f"seed {r['seed']} (error {r['generalisation_error']:.1e})" for r in runs
            )
        )
        for (design, scale, n), runs in groups.items()
    )

    def misplaced(f, column):
        value = f[f"{column}_best_rule"]["misplaced"]
        return "undefined (C = 0)" if value is None else value

    families = "; ".join(
        f"{init}: |C1/C2| {misplaced(f, 'imbalance_ratio')}, "
        f"|α1/α2| {misplaced(f, 'growing_mode_ratio')}"
        for init, f in summary["init_families"].items()
    )
    scans = summary["boundary"]
    ref_label = next(iter(scans))
    ref = scans[ref_label]
    mode = np.asarray(shift["mode_ratio_per_seed"])
    lines = [
        f"single-neuron recovery ({summary['paper']}){' [quick]' if summary['quick'] else ''}",
        f"runs: {summary['runs']} ({summary['failed_runs']} failed); wall time "
        f"{summary['wall_seconds']:.0f} s (flows {summary['run_seconds']:.0f} s"
        + (
            f"; {summary['configurations_from_checkpoint']} of {summary['configurations']} "
            f"configurations loaded from {summary['checkpoint_dir']})"
            if summary.get("checkpoint_dir")
            else ")"
        )
        + "; every run is a row of runs.csv",
        f"rule for every sample size below: {summary['rule']} [thresholds.csv]",
        "optimistic sample size: tangent rank at Q^1 "
        f"{summary['optimistic_sample_size_tangent_rank']}; "
        f"students started near Q^1 recover from {near}",
        "separation sample size (random inits at the smallest ε): "
        + ", ".join(f"{d}: {fmt(v)}" for d, v in summary["separation_sample_size"].items())
        + f"; recovered below it: {outliers or 'none'}",
        f"time shift (C1/C2 = {shift['imbalance_ratio']:g} by rescaling neuron 2, "
        f"{shift['num_seeds']} seeds × {len(shift['scales'])} ε) [time_shift.csv]: slope "
        f"{shift['slope']:.4f} per log(1/ε), rate {shift['measured_rate']:.4f} vs linearised "
        f"growth rate {shift['growth_rate']:.4f} ({shift['relative_difference']:.1e} relative); "
        f"after the shift one seed's curves differ by ≤ {shift['max_gap_within_seed']:.2g} "
        f"decades of loss, different seeds by ≥ {shift['min_gap_between_seeds']:.2g}; "
        f"escape intercepts spread {shift['intercept_spread']:.3g}; |α1/α2| per seed "
        f"{np.min(np.abs(mode)):.3g}–{np.max(np.abs(mode)):.3g}",
        f"basin, Gaussian inits, n=6, ε=1e-8 [basin.csv]: classes {basin['class_counts']} "
        "(k = Q^k, -1 shared, 0 none); along |α1/α2| "
        f"{rule(a)}, Q{a['upper_class']} alone above {a['upper']:.3g}, Q{a['lower_class']} alone "
        f"below {a['lower']:.3g}; along |C1/C2| {rule(c)}, a single class only above "
        f"{c['upper']:.3g} and below {c['lower']:.3g}",
        "misplaced runs by init family (best two boundaries) [basin.csv, init_families.csv]: "
        + families,
        f"Q^1 basin onset r* along α1/α2 from the pure growing mode (√2 = 1.4142) "
        f"[boundary.csv]: {ref_label}: {ref['boundary']:.4g} "
        f"(±{100 * (ref['resolution'] - 1):.2g} %); "
        + "; ".join(
            f"{label}: "
            + (
                f"{b['boundary']:.4g} (±{100 * (b['resolution'] - 1):.2g} %)"
                if np.isfinite(b["boundary"])
                else "none in the scan"
            )
            for label, b in list(scans.items())[1:]
        ),
        "wide rational student to its limit: "
        + ", ".join(
            f"{run} {'stationary' if v['stationary'] else 'at t1'} at t = {v['t_stop']:.3g}"
            for run, v in summary["wide_rational_stops"].items()
        )
        + f" (‖∇L‖ ≤ 1e-10·‖θ‖, t1 = {summary['wide_rational_t1']:g}); neurons above 1 % of "
        f"the target's RMS there: {summary['wide_rational']} [wide_rational.csv]",
    ]
    return "\n".join(lines)
