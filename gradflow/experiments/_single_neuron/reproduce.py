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
    neuron_outputs,
    optimistic_sample_size,
    threshold_size,
    time_shift_fit,
)
from .run import run_many


PAPER_BOUNDARIES = (1.35, 0.74)


class Reproduction(eqx.Module):
    """The experiments behind the paper's figures (defaults: full size).

    - `errors`: generalisation error vs $n$ per $\\varepsilon$, one configuration per
      data design (Fig. 1). The Gaussian one includes `tiny_scale` for Fig. 4.
    - `time_shift`: $n = 6$, $C_1/C_2$ prescribed, several $\\varepsilon$ and seeds (Fig. 2).
    - `basin`: $n = 6$, $\\varepsilon = 10^{-8}$, many seeds (Fig. 3).
    - `near_target`: inits near $Q^1$ over $n$ (the empirical optimistic sample size).
    - `wide`: width-1000 rational student, one configuration per (seed, scale) (Fig. 5).
    - `positive_fraction`: the recovery probability that counts as a positive-measure
      set of inits (for the separation sample size).
    """

    errors: tuple[SingleNeuronConfig, ...]
    tiny_scale: float
    time_shift: SingleNeuronConfig
    basin: SingleNeuronConfig
    near_target: SingleNeuronConfig
    wide: tuple[SingleNeuronConfig, ...]
    positive_fraction: float = 0.05


def reproduction(quick: bool = False) -> Reproduction:
    """The full-size experiments, or with `quick=True` a CI-size version of each (same
    code paths, a few seeds, two compilations in all)."""
    # One set of solver settings for every width-2 experiment, so that they all share
    # one compiled program (see `run_many`). The late phase can be very slow: a small,
    # nearly balanced neuron dies at a rate set by how much of its (almost linear)
    # output the other neuron's tangent space cannot absorb on the data, and on Gaussian
    # inputs that is tiny. Measured (n = 6 and 8, Gaussian, ε = 1e-8, 50 seeds each):
    # recovered 44 % / 74 % at t1 = 1e6 but 98 % / 100 % at t1 = 1e10, the Rosenbrock
    # solver's steps growing only from 905 to 1639 per run on average.
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
        num_seeds=2 if quick else 5,
        imbalance=(0.5, 1.0),
        seed=1,
    )
    basin = dataclasses.replace(
        base, sizes=(6,), scales=(1e-8,), num_seeds=12 if quick else 400, seed=2
    )
    near_target = dataclasses.replace(
        base,
        init="near_target",
        sizes=sizes,
        scales=(1e-3,),
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
        solver="tsit5",
        t1=200.0 if quick else 1e4,
        loss_tol=None,
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


def time_shift_summary(ds, config: SingleNeuronConfig) -> dict:
    """Fit of escape time = b_seed + s·log(1/ε) against the linearised growth rate λ."""
    (n,) = config.sizes
    escape = ds["escape_time"].sel(n=n).transpose("seed", "scale").values
    log_inv = np.log(1 / ds.scale.values)
    fit = time_shift_fit(
        np.broadcast_to(log_inv, escape.shape),
        escape,
        np.broadcast_to(ds.seed.values[:, None], escape.shape),
    )
    x, y = config.training_data(n)
    rate = growth_rate(config, x, y)
    ratio = ds["initial_imbalance"].sel(neuron=0) / ds["initial_imbalance"].sel(neuron=1)
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
        imbalance_ratio=float(np.median(ratio.values)),
        imbalance_ratio_max_deviation=float(np.max(np.abs(ratio.values - np.median(ratio)))),
    )


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
            "target_set": one["target_set"].values,
            "generalisation_error": one["generalisation_error"].values,
            "status": one["status"].values,
        }
    )


def basin_summary(table) -> dict:
    """Boundaries along both ratios, and how the paper's rule (|C₁/C₂| > 1.35 → one set,
    < 0.74 → the other) fares on these runs."""
    out = {
        column: basin_boundaries(table[column], table["target_set"])
        for column in ("imbalance_ratio", "growing_mode_ratio")
    }
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
            final_loss=float(np.nanmin(one["loss"].values)),
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
) -> dict:
    """Runs every experiment of `experiments` (default `reproduction(quick)`) and writes
    into `out_dir`, for each figure `NAME.png` with its numbers `NAME.csv` / `NAME.json`,
    plus `summary.json` and `summary.txt`; with `save_datasets`, every run's labelled
    dataset as `datasets/EXPERIMENT.nc` (netCDF, for `xarray.open_dataset`).

    **Returns:** the summary (thresholds, basin boundaries, slope, wall time, ...).
    """
    from .figures import (
        _pyplot,
        basin_figure,
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
    configs = [*e.errors, e.time_shift, e.basin, e.near_target, *e.wide]
    datasets = run_many(configs, progress=progress, checkpoint_dir=checkpoint_dir)
    run_seconds = time.perf_counter() - start
    errors = dict(zip((c.design for c in e.errors), datasets[: len(e.errors)]))
    ds_shift, ds_basin, ds_near = datasets[len(e.errors) : len(e.errors) + 3]
    ds_wide = datasets[len(e.errors) + 3 :]
    names = ["errors_" + c.design for c in e.errors] + ["time_shift", "basin", "near_target"]
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
    import pandas as pd

    pd.concat(tables.values()).to_csv(
        out / "generalisation_error.csv", index=False, float_format="%.8g"
    )
    save(generalisation_error_figure(tables), "generalisation_error")

    # Fig. 2: time-shift collapse.
    shift = time_shift_summary(ds_shift, e.time_shift)
    dump(shift, "time_shift")
    save(time_shift_figure(_curves([ds_shift]), shift), "time_shift")
    summary["time_shift"] = {
        k: shift[k]
        for k in ("slope", "measured_rate", "growth_rate", "relative_difference", "residual_rms")
    }

    # Fig. 3: basins at n = 6, ε = 1e-8.
    table = basin_table(ds_basin)
    table.to_csv(out / "basin.csv", index=False, float_format="%.8g")
    basin = basin_summary(table)
    dump(basin, "basin")
    save(basin_figure(table, basin), "basin")
    summary["basin"] = basin

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

    # Thresholds: recovery probability vs n.
    rows = []
    for design, ds in errors.items():
        for scale in ds.scale.values:
            p = ds["recovered"].sel(scale=scale).mean("seed")
            for n, value in zip(ds.n.values, p.values):
                rows.append((f"{design}, ε={scale:g}", int(n), float(value)))
    p_near = ds_near["recovered"].isel(scale=0).mean("seed")
    for n, value in zip(ds_near.n.values, p_near.values):
        rows.append((f"near Q¹ (δ={float(ds_near.scale[0]):g})", int(n), float(value)))
    p_table = pd.DataFrame(rows, columns=["experiment", "n", "probability"])
    p_table.to_csv(out / "thresholds.csv", index=False, float_format="%.8g")
    separation = {}
    for design, ds in errors.items():
        smallest = ds.scale.values.min()
        p = ds["recovered"].sel(scale=smallest).mean("seed")
        separation[design] = threshold_size(ds.n.values, p.values, e.positive_fraction)
    thresholds = dict(
        optimistic_sample_size_tangent_rank=optimistic_sample_size(e.errors[0]),
        optimistic_sample_size_near_target=threshold_size(ds_near.n.values, p_near.values, 0.5),
        separation_sample_size=separation,
        positive_fraction=e.positive_fraction,
        smallest_scale={d: float(ds.scale.values.min()) for d, ds in errors.items()},
    )
    dump(thresholds, "thresholds")
    save(thresholds_figure(p_table, thresholds), "thresholds")
    summary.update(thresholds)

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
    summary["wall_seconds"] = time.perf_counter() - start
    summary["machine"] = f"{platform.platform()}, {jax.default_backend()}"
    dump(summary, "summary")
    (out / "summary.txt").write_text(summary_text(summary) + "\n")
    return summary


def summary_text(summary: dict) -> str:
    """The headline numbers in a few lines."""
    shift, basin = summary["time_shift"], summary["basin"]
    c, a = basin["imbalance_ratio"], basin["growing_mode_ratio"]
    bands = "; ".join(
        f"{band.replace('_', ' ')}: {counts}"
        for band, counts in basin["paper_bands_class_counts"].items()
    )
    lines = [
        f"single-neuron recovery ({summary['paper']}){' [quick]' if summary['quick'] else ''}",
        f"runs: {summary['runs']} ({summary['failed_runs']} failed); wall time "
        f"{summary['wall_seconds']:.0f} s (flows {summary['run_seconds']:.0f} s"
        + (
            f"; chunks checkpointed in {summary['checkpoint_dir']})"
            if summary.get("checkpoint_dir")
            else ")"
        ),
        f"optimistic sample size: tangent rank {summary['optimistic_sample_size_tangent_rank']},"
        f" near-target recovery from n = {summary['optimistic_sample_size_near_target']:g}",
        "separation sample size (recovery probability ≥ "
        f"{summary['positive_fraction']:g} at the smallest ε): "
        + ", ".join(f"{d}: {v:g}" for d, v in summary["separation_sample_size"].items()),
        f"time shift: slope {shift['slope']:.4f} per log(1/ε), i.e. rate "
        f"{shift['measured_rate']:.4f} vs linearised growth rate {shift['growth_rate']:.4f} "
        f"({shift['relative_difference']:.1e} relative)",
        f"basin along |C1/C2|: a single class only above {c['upper']:.3g} ({c['upper_count']} "
        f"runs, class {c['upper_class']}) and below {c['lower']:.3g} ({c['lower_count']} runs, "
        f"class {c['lower_class']}), {c['between']} runs between; the paper's bands (boundaries "
        f"1.35 / 0.74) hold classes {bands}",
        f"basin boundaries along |α1/α2|: {a['upper']:.3g} (class {a['upper_class']} above, "
        f"{a['upper_count']} runs) / {a['lower']:.3g} (class {a['lower_class']} below, "
        f"{a['lower_count']} runs), {a['between']} between",
        f"classes at n=6, ε=1e-8: {basin['class_counts']} (k = Q^k, -1 shared, 0 none)",
        f"wide rational student, active neurons: {summary['wide_rational']}",
    ]
    return "\n".join(lines)
