"""Every figure of the optimization-threshold reproduction from one call: configuration →
the exact ReLU flows of `run` (one checkpointed ensemble per block) → measures →
thresholds and fits → figures, each PNG beside its numbers (CSV tables, NetCDF datasets),
and a `summary.txt` whose every number names the table it comes from."""

import json
import os
import pathlib
import platform
import time
import warnings

import jax
import numpy as np

from . import measures as ms
from .config import quick_config, ThresholdConfig
from .run import blocks, compare_methods, run_group, threshold


PAPER = "Boursier & Flammarion, arXiv:2410.02348"
DESCRIPTION = (
    "optimization threshold and early alignment of two-layer ReLU nets: Boursier & "
    "Flammarion, arXiv:2410.02348"
)

RUN_COLUMNS = [
    "train_mse",
    "test_mse",
    "ols_train_mse",
    "ols_test_mse",
    "distance_to_ols",
    "interpolating",
    "converged",
    "stationarity",
    "t_stop",
    "settle_time",
    "num_events",
    "num_steps",
    "status",
    "clusters",
    "alignment_time",
    "alignment_cos_extremal",
    "alignment_cos_ols",
    "extremal_value_plus",
    "extremal_value_minus",
    "extremal_cos_ols",
]


def _load() -> str:
    try:
        return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def stored_dataset(ds):
    """What `blocks/*.nc` keep of a dataset: everything but the saved nets themselves
    (`W_t`, `a_t`, most of the bytes), which are kept in $d = 2$ only (the directions
    figure's); the loss and $\\|\\theta\\|$ at the save times are kept everywhere."""
    return ds if int(ds.attrs["dim"]) == 2 else ds.drop_vars(["W_t", "a_t"])


def run_table(datasets: dict):
    """One row per run: `d, m, n, seed` and every per-run measure."""
    import pandas as pd

    frames = []
    for (d, m), ds in sorted(datasets.items()):
        frame = ds[RUN_COLUMNS].to_dataframe().reset_index()
        frame.insert(0, "m", m)
        frame.insert(0, "d", d)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def reproduce(
    out_dir="optimization-threshold",
    *,
    quick: bool = False,
    progress: bool = False,
    config: ThresholdConfig | None = None,
    command: str | None = None,
    checkpoint_dir=None,
) -> dict:
    """Runs every block of `config` (default: full size, or `quick_config()` with
    `quick=True`) and writes into `out_dir`: `runs.csv` (one row per run), `loss_vs_n`,
    `threshold`, `threshold_growth`, `alignment`, `directions`, `methods` (each `.png`
    beside a `.csv`), `blocks/d{d}_m{m}.nc` (the labelled datasets, with the saved
    trajectories), `fits.json`, `summary.json` and `summary.txt`. With `checkpoint_dir`
    every finished chunk of flows is kept there, and a rerun resumes from them.

    **Returns:** the summary."""
    with warnings.catch_warnings():
        # Medians of a size whose runs are all undetermined (NaN) are NaN, as they should.
        warnings.filterwarnings("ignore", message="All-NaN slice|Mean of empty slice")
        return _reproduce(out_dir, quick, progress, config, command, checkpoint_dir)


def _reproduce(out_dir, quick, progress, config, command, checkpoint_dir) -> dict:
    from .figures import (
        _pyplot,
        alignment_figure,
        directions_figure,
        loss_figure,
        methods_figure,
        threshold_figure,
        threshold_growth_figure,
    )

    config = config or (quick_config() if quick else ThresholdConfig())
    out = pathlib.Path(out_dir)
    (out / "blocks").mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    command = command or f"gradflow reproduce optimization-threshold{' --quick' if quick else ''}"
    start_all = time.perf_counter()
    load_before = _load()
    seconds = {}

    def save(fig, name):
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)

    datasets = {}
    for m, specs in blocks(config).items():
        group = run_group(
            config,
            m,
            specs,
            progress=progress,
            checkpoint_dir=checkpoint_dir,
            num_seeds=config.seeds_at(m),
        )
        seconds[f"flows m={m}"] = next(iter(group.values())).attrs["seconds"]
        for d, ds in group.items():
            datasets[(d, m)] = ds
            try:
                stored_dataset(ds).to_netcdf(out / "blocks" / f"d{d}_m{m}.nc")
            except (ImportError, ValueError) as error:  # no netCDF writer installed
                print(f"d{d}_m{m}.nc not written ({error})")
    runs = run_table(datasets)
    runs.to_csv(out / "runs.csv", index=False, float_format="%.8g")

    # Loss against n at loss_dim, one curve per width.
    loss_sets = {
        m: ds.sel(n=list(config.loss_sizes))
        for (d, m), ds in datasets.items()
        if d == config.loss_dim and m in config.widths
    }
    sigma2 = config.noise**2
    rows = []
    for m, ds in sorted(loss_sets.items()):
        for n in ds.n.values:
            sel = ds.sel(n=n)
            rows.append(
                dict(
                    m=m,
                    n=int(n),
                    runs=int(sel.sizes["seed"]),
                    converged=int(np.nansum(sel["converged"].values)),
                    interpolating_fraction=float(np.nanmean(sel["interpolating"].values)),
                    **{
                        f"{name}_{q}": float(np.nanquantile(sel[name].values, p))
                        for name in (
                            "train_mse",
                            "test_mse",
                            "ols_train_mse",
                            "ols_test_mse",
                            "distance_to_ols",
                        )
                        for q, p in (("q25", 0.25), ("median", 0.5), ("q75", 0.75))
                    },
                    sigma2=sigma2,
                )
            )
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "loss_vs_n.csv", index=False, float_format="%.8g")
    save(loss_figure(loss_sets, config.loss_dim, sigma2), "loss_vs_n")

    # The threshold n* per dimension and its growth.
    th_sets = {d: datasets[(d, config.threshold_width)] for d in config.dims}
    thresholds = {
        d: threshold(ds, num_resamples=config.num_resamples, seed=d) for d, ds in th_sets.items()
    }
    rows = []
    for d, ds in sorted(th_sets.items()):
        for n, fraction in zip(ds.n.values, thresholds[d]["fraction"]):
            rows.append(
                dict(
                    d=d,
                    n=int(n),
                    interpolating_fraction=float(fraction),
                    converged=int(np.nansum(ds.sel(n=n)["converged"].values)),
                    runs=int(ds.sizes["seed"]),
                )
            )
    pd.DataFrame(rows).to_csv(out / "threshold.csv", index=False, float_format="%.6g")
    save(threshold_figure(th_sets, thresholds), "threshold")
    dims = sorted(thresholds)
    n_star = [thresholds[d]["n_star"] for d in dims]
    low = [thresholds[d]["low"] for d in dims]
    high = [thresholds[d]["high"] for d in dims]
    # The fit uses the dimensions whose n* the grid brackets.
    bracketed = [np.nan if thresholds[d]["censored"] else v for d, v in zip(dims, n_star)]
    fit = ms.fit_power_law(dims, bracketed, np.stack([thresholds[d]["replicates"] for d in dims]))
    pd.DataFrame(
        dict(
            d=dims,
            n_star=n_star,
            low_95=low,
            high_95=high,
            bootstrap_finite_fraction=[thresholds[d]["finite_fraction"] for d in dims],
            censored=[thresholds[d]["censored"] for d in dims],
        )
    ).to_csv(out / "threshold_growth.csv", index=False, float_format="%.6g")
    (out / "fits.json").write_text(json.dumps(dict(threshold_growth=fit), indent=2) + "\n")
    censored = [thresholds[d]["censored"] for d in dims]
    save(threshold_growth_figure(dims, n_star, low, high, fit, censored), "threshold_growth")

    # Early alignment and clusters.
    rows = []
    for d, ds in sorted(th_sets.items()):
        for n in ds.n.values:
            sel = ds.sel(n=n)
            rows.append(
                dict(
                    d=d,
                    n=int(n),
                    **{
                        f"{name}_median": float(np.nanmedian(sel[name].values))
                        for name in (
                            "alignment_cos_extremal",
                            "alignment_cos_ols",
                            "clusters",
                            "alignment_time",
                            "extremal_cos_ols",
                        )
                    },
                )
            )
    pd.DataFrame(rows).to_csv(out / "alignment.csv", index=False, float_format="%.6g")
    save(alignment_figure(th_sets), "alignment")

    # Neuron directions over time in d = 2: the seed-0 runs below and above n*.
    if 2 in th_sets:
        ds2 = th_sets[2]
        interp = ds2["interpolating"].sel(seed=0).values
        below = ds2.n.values[interp > 0]
        above = ds2.n.values[interp == 0]
        picks = [
            (int(below[-1]) if below.size else int(ds2.n.values[0]), 0),
            (int(above[-1]) if above.size else int(ds2.n.values[-1]), 0),
        ]
        rows = []
        for n, seed in picks:
            run = ds2.sel(n=n, seed=seed)
            W, a = run["W_t"].values, run["a_t"].values
            for k, t in enumerate(ds2.time.values):
                for j in range(W.shape[1]):
                    rows.append(
                        dict(
                            n=n,
                            seed=seed,
                            time=t,
                            neuron=j,
                            a=a[k, j],
                            w0=W[k, j, 0],
                            w1=W[k, j, 1],
                            angle_deg=np.degrees(np.arctan2(W[k, j, 1], W[k, j, 0])),
                        )
                    )
        pd.DataFrame(rows).to_csv(out / "directions.csv", index=False, float_format="%.8g")
        save(directions_figure(ds2, picks), "directions")

    # The flow next to GD, Adam and the GELU flow.
    start = time.perf_counter()
    compare = _methods(config, datasets[(config.compare_dim, config.compare_width)], checkpoint_dir)
    seconds["methods"] = time.perf_counter() - start
    compare.to_dataframe().reset_index().to_csv(
        out / "methods.csv", index=False, float_format="%.8g"
    )
    save(methods_figure(compare), "methods")

    seconds["total"] = time.perf_counter() - start_all
    conv = runs["converged"].to_numpy()
    summary = dict(
        paper=PAPER,
        quick=quick,
        command=command,
        config={k: getattr(config, k) for k in config.__dataclass_fields__},
        runs=int(len(runs)),
        converged=int(np.nansum(conv)),
        max_stationarity=float(np.nanmax(runs["stationarity"])),
        thresholds={
            int(d): dict(
                n_star=thresholds[d]["n_star"],
                low_95=thresholds[d]["low"],
                high_95=thresholds[d]["high"],
                censored=thresholds[d]["censored"],
            )
            for d in dims
        },
        fit=fit,
        loss_vs_n=rows_loss(out / "loss_vs_n.csv"),
        methods={
            str(method): dict(
                train_mse=[
                    float(v)
                    for v in np.nanmedian(compare["train_mse"].sel(algorithm=method).values, axis=1)
                ],
                test_mse=[
                    float(v)
                    for v in np.nanmedian(compare["test_mse"].sel(algorithm=method).values, axis=1)
                ],
                distance_to_flow=[
                    float(v)
                    for v in np.nanmedian(
                        compare["distance_to_flow"].sel(algorithm=method).values, axis=1
                    )
                ],
            )
            for method in compare.algorithm.values
        },
        methods_sizes=[int(n) for n in compare.n.values],
        seconds=seconds,
        load_before=load_before,
        load_after=_load(),
        machine=f"{platform.platform()}, {os.cpu_count()} CPUs, {jax.default_backend()}",
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
    (out / "summary.txt").write_text(summary_text(summary) + "\n")
    return summary


def _methods(config, flows, checkpoint_dir):
    """`compare_methods`, kept in `checkpoint_dir` (keyed by the configuration) once done."""
    import hashlib

    import xarray as xr

    if checkpoint_dir is None:
        return compare_methods(config, flows)
    tag = hashlib.sha256(repr(config).encode()).hexdigest()[:16]
    path = pathlib.Path(checkpoint_dir) / f"methods_{tag}.nc"
    if path.exists():
        with xr.open_dataset(path) as stored:
            return stored.load()
    compare = compare_methods(config, flows)
    try:
        compare.to_netcdf(path)
    except (ImportError, ValueError) as error:  # no netCDF writer: recomputed next time
        print(f"{path.name} not written ({error})")
    return compare


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def rows_loss(path) -> list:
    import pandas as pd

    frame = pd.read_csv(path)
    keep = [
        "m",
        "n",
        "runs",
        "converged",
        "interpolating_fraction",
        "train_mse_median",
        "test_mse_median",
        "ols_test_mse_median",
        "distance_to_ols_median",
    ]
    return frame[keep].to_dict(orient="records")


def summary_text(summary: dict) -> str:
    """The headline numbers, each with the file it comes from."""
    cfg = summary["config"]
    fit = summary["fit"]
    lines = [
        f"optimization threshold ({summary['paper']}){' [quick]' if summary['quick'] else ''}",
        f"command: {summary['command']}",
        f"setup: x ~ {cfg['inputs']}, y = β*·x + N(0, {cfg['noise']}²), ‖β*‖ = "
        f"{cfg['teacher_norm']}, ReLU without bias, init λ = {cfg['init_scale']:g} "
        f"({'balanced' if cfg['balanced'] else 'i.i.d.'}), exact flow of ½·MSE to t1 = "
        f"{cfg['t1']:g}; {summary['runs']} runs, {summary['converged']} converged "
        f"(‖θ̇‖/‖θ‖ ≤ {cfg['stationarity_tol']:g}; largest {summary['max_stationarity']:.1e}); "
        f"interpolating = train MSE < {cfg['interpolation_tol']:g}·σ² (runs.csv)",
    ]
    for row in summary["loss_vs_n"]:
        lines.append(
            f"  d = {cfg['loss_dim']}, m = {row['m']}, n = {row['n']}: {row['converged']}/"
            f"{row['runs']} converged, interpolating {row['interpolating_fraction']:.2f}, "
            f"median train {row['train_mse_median']:.4g}, test {row['test_mse_median']:.4g} "
            f"(OLS test {row['ols_test_mse_median']:.4g}), ‖f − OLS‖ "
            f"{row['distance_to_ols_median']:.3g} (loss_vs_n.csv)"
        )

    def n_star(v):
        if v["censored"] == "below":
            return f"≤ {v['n_star']:.3g} (the smallest size)"
        if v["censored"] == "above":
            return "above the largest size"
        return f"{v['n_star']:.3g} [{v['low_95']:.3g}, {v['high_95']:.3g}]"

    th = ", ".join(f"d = {d}: {n_star(v)}" for d, v in summary["thresholds"].items())
    lines.append(
        f"n* (fraction of converged runs interpolating falls to 1/2, log-interpolated; "
        f"bootstrap 95 % over seeds; width {cfg['threshold_width']}; threshold_growth.csv): {th}"
    )
    if np.isfinite(fit.get("exponent", np.nan)):
        band = ""
        if "exponent_stderr" in fit:
            band = (
                f" ± {fit['exponent_stderr']:.2f} (bootstrap 95 % [{fit['exponent_low']:.2f}, "
                f"{fit['exponent_high']:.2f}], {fit['replicates_used']} replicates)"
            )
        lines.append(
            f"fitted n* ≈ {fit['prefactor']:.3g}·d^{fit['exponent']:.2f}{band} over d = "
            f"{fit['dims']} (fits.json); the theory's sufficient condition is n ≳ d³"
        )
    sizes = summary["methods_sizes"]
    for method, v in summary["methods"].items():
        lines.append(
            f"  {method} at n = {sizes}: median train "
            + ", ".join(f"{x:.3g}" for x in v["train_mse"])
            + "; test "
            + ", ".join(f"{x:.3g}" for x in v["test_mse"])
            + "; ‖f − f_flow‖ "
            + ", ".join(f"{x:.2g}" for x in v["distance_to_flow"])
            + " (methods.csv)"
        )
    lines.append(
        "seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items())
        + f"; {summary['machine']}; {summary['load_before']} at the start, "
        f"{summary['load_after']} at the end"
    )
    return "\n".join(lines)
