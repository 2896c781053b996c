"""Every figure of the adaptive-regime reproduction from one call: configuration → the
ensembles of `run` → labelled datasets → figures, each PNG beside its numbers (CSV tables
and NetCDF datasets), and a `summary.txt` whose every number names the table it comes
from."""

import json
import os
import pathlib
import platform
import time

import jax
import numpy as np

from .config import AdaptiveRegimeConfig, quick_config
from .run import example, gd_check, loss_slices, sweep


PAPER = "Sahs, Pyle, Anselmi & Patel, arXiv:2503.10587"
DESCRIPTION = (
    "the adaptive regime (breakplane clusters, datapoint pinning): Sahs, Pyle, Anselmi & "
    "Patel, arXiv:2503.10587"
)
# Time series kept in the NetCDF files for this many seeds (all seeds' summaries are
# in the CSV tables): the full series of every seed would be tens of MB.
SERIES_SEEDS = 8

SEED_COLUMNS = (
    "t_stop", "stop_reason", "final_loss", "num_steps", "formation_time", "alignment",
    "alignment_min", "state_pins", "median_point_distance", "near_pinned_fraction",
)  # fmt: skip
KINKED_SEED_COLUMNS = (
    "pins_end", "pinned_neurons_end", "max_points_end", "log_state_mismatch",
    "num_pin_events", "num_crossings", "num_releases", "median_pin_duration", "num_events",
    "released_on_point", "pinned_in_clusters",
)  # fmt: skip
TIME_COLUMNS = ("loss", "num_clusters", "largest_cluster", "clustered", "grown_neurons")
KINKED_TIME_COLUMNS = ("pins_held", "pinned_neurons", "max_points_per_neuron", "pins_gained",
                       "pins_released")  # fmt: skip


def _load() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "unknown"


def _netcdf(ds, path):
    try:
        ds.to_netcdf(path)
    except (ImportError, ValueError) as error:  # no netCDF writer installed
        print(f"{path.name} not written ({error})")


def _write_example(ds, out, name):
    """Per-seed table, per-time quantiles, the event log, and a NetCDF of the first
    seeds' series."""
    import pandas as pd

    kinked = bool(ds.attrs["kinked"])
    tol = float(ds.attrs["cluster_tol"])
    columns = list(SEED_COLUMNS) + (list(KINKED_SEED_COLUMNS) if kinked else [])
    table = ds[columns].to_dataframe()
    for who in ("all", "grown"):
        for k in ("clusters", "largest", "clustered"):
            for t in ds.tol.values:
                table[f"{k}_{who}_tol{t:g}"] = ds[f"end_{k}_{who}"].sel(tol=t).values
    table.reset_index().to_csv(out / f"{name}_seeds.csv", index=False, float_format="%.8g")
    series = list(TIME_COLUMNS) + (list(KINKED_TIME_COLUMNS) if kinked else [])
    rows = {"time": ds.time.values}
    for v in series:
        q = np.quantile(ds[v].values, [0.25, 0.5, 0.75], axis=0)
        for label, row in zip(("q25", "median", "q75"), q):
            rows[f"{v}_{label}"] = row
        rows[f"{v}_mean"] = ds[v].values.mean(axis=0)
    pd.DataFrame(rows).to_csv(out / f"{name}_time.csv", index=False, float_format="%.8g")
    if kinked:
        kind = ds["event_kind"].values
        seed, event = np.nonzero(kind >= 0)
        pd.DataFrame(
            dict(
                seed=seed,
                event=event,
                kind=np.where(kind[seed, event] == 1, "pin", "crossing"),
                neuron=ds["event_neuron"].values[seed, event],
                point=ds["event_point"].values[seed, event],
                time_in=ds["event_time_in"].values[seed, event],
                time_out=ds["event_time_out"].values[seed, event],
                direction=ds["event_direction"].values[seed, event],
            )
        ).to_csv(out / f"{name}_events.csv", index=False, float_format="%.10g")
    small = ds.isel(seed=slice(0, SERIES_SEEDS))
    small = small.assign(stopped=small["stopped"].astype(np.int8))
    for key in list(small.attrs):
        if isinstance(small.attrs[key], bool):
            small.attrs[key] = int(small.attrs[key])
    small.attrs["cluster_tol"] = tol
    _netcdf(small, out / f"{name}.nc")


def _example_summary(ds) -> dict:
    tol = float(ds.attrs["cluster_tol"])
    fitted = ds["stop_reason"].values == 1
    largest = ds["end_largest_grown"].sel(tol=tol).values
    clusters = ds["end_clusters_grown"].sel(tol=tol).values

    def quartiles(v):
        v = np.asarray(v, np.float64)
        v = v[np.isfinite(v)]
        return [float(q) for q in np.quantile(v, [0.25, 0.5, 0.75])] if v.size else None

    out = dict(
        activation=str(ds.attrs["activation"]),
        width=int(ds.sizes["neuron"]),
        scale=float(ds.attrs["scale"]),
        seeds=int(ds.sizes["seed"]),
        fitted=int(fitted.sum()),
        stop_reasons={
            int(r): int(np.sum(ds["stop_reason"].values == r))
            for r in np.unique(ds["stop_reason"].values)
        },  # fmt: skip
        failed=int(np.sum(ds["status"].values != 0)),
        with_cluster=int(np.sum(clusters >= 1)),
        clusters_quartiles=quartiles(clusters),
        largest_histogram={int(v): int(np.sum(largest == v)) for v in np.unique(largest)},
        largest_all_histogram={
            int(v): int(np.sum(ds["end_largest_all"].sel(tol=tol).values == v))
            for v in np.unique(ds["end_largest_all"].sel(tol=tol).values)
        },
        largest_by_tol={
            f"{t:g}": float(np.median(ds["end_largest_grown"].sel(tol=t).values))
            for t in ds.tol.values
        },
        grown_quartiles=quartiles(ds["grown_neurons"].values[:, -1]),
        formation_quartiles=quartiles(ds["formation_time"].values),
        t_stop_quartiles=quartiles(ds["t_stop"].values),
        alignment_quartiles=quartiles(ds["alignment"].values),
        alignment_min=float(np.nanmin(ds["alignment_min"].values))
        if np.isfinite(ds["alignment_min"].values).any()
        else None,
        near_pinned_quartiles=quartiles(ds["near_pinned_fraction"].values),
        steps_quartiles=quartiles(ds["num_steps"].values),
    )
    if ds.attrs["kinked"]:
        points = ds["max_points_end"].values
        out.update(
            pinned_neurons_quartiles=quartiles(ds["pinned_neurons_end"].values),
            pins_end_total=int(ds["pins_end"].values.sum()),
            max_points_histogram={int(v): int(np.sum(points == v)) for v in np.unique(points)},
            max_points_ever=int(ds["max_points_per_neuron"].values.max()),
            pin_events_total=int(ds["num_pin_events"].values.sum()),
            releases_total=int(ds["num_releases"].values.sum()),
            crossings_total=int(ds["num_crossings"].values.sum()),
            log_state_mismatch_total=int(ds["log_state_mismatch"].values.sum()),
            released_on_point_total=int(ds["released_on_point"].values.sum()),
            pinned_in_clusters_quartiles=quartiles(ds["pinned_in_clusters"].values),
            pin_duration_quartiles=quartiles(ds["median_pin_duration"].values),
            events_quartiles=quartiles(ds["num_events"].values),
        )
    return out


def _sweep_tables(sw, out):
    tol = float(sw.attrs["cluster_tol"])
    long = sw.drop_dims("tol").to_dataframe().reset_index()
    for name in ("end_largest_grown", "end_clusters_grown", "end_largest_all"):
        long[name] = sw[name].sel(tol=tol).values.reshape(-1)
    long.to_csv(out / "sweep.csv", index=False, float_format="%.8g")
    rows = []
    smallest = sw.scale.values[np.argmin(sw.scale.values)]
    for activation in sw.activation.values:
        for m in sw.width.values:
            ref = sw.sel(activation=activation, width=m, scale=smallest)
            for scale in sw.scale.values:
                part = sw.sel(activation=activation, width=m, scale=scale)
                # The same draws at every scale: does a seed end as it does at the smallest?
                same = np.ones(part.sizes["seed"], bool)
                for name in ("end_largest_grown", "end_clusters_grown"):
                    same &= part[name].sel(tol=tol).values == ref[name].sel(tol=tol).values
                same &= np.isclose(part["near_pinned_fraction"].values,
                                   ref["near_pinned_fraction"].values)  # fmt: skip
                largest = part["end_largest_grown"].sel(tol=tol).values
                clusters = part["end_clusters_grown"].sel(tol=tol).values
                row = dict(
                    activation=str(activation),
                    width=int(m),
                    scale=float(scale),
                    seeds=int(part.sizes["seed"]),
                    fitted_fraction=float(np.mean(part["stop_reason"].values == 1)),
                    cluster_fraction=float(np.mean(clusters >= 1)),
                    clusters_median=float(np.median(clusters)),
                    largest_median=float(np.median(largest)),
                    largest_fraction_median=float(np.median(largest) / m),
                    largest_all_median=float(
                        np.median(part["end_largest_all"].sel(tol=tol).values)
                    ),
                    grown_fraction_median=float(np.median(part["grown_fraction"].values)),
                    near_pinned_median=float(np.nanmedian(part["near_pinned_fraction"].values)),
                    point_distance_median=float(np.nanmedian(part["median_point_distance"].values)),
                    alignment_median=float(np.nanmedian(part["alignment"].values))
                    if np.isfinite(part["alignment"].values).any()
                    else np.nan,
                    t_stop_median=float(np.median(part["t_stop"].values)),
                    pinned_neurons_median=float(np.nanmedian(part["pinned_neurons_end"].values))
                    if np.isfinite(part["pinned_neurons_end"].values).any()
                    else np.nan,
                    max_points_max=float(np.nanmax(part["max_points_end"].values))
                    if np.isfinite(part["max_points_end"].values).any()
                    else np.nan,
                    pin_events_median=float(np.nanmedian(part["num_pin_events"].values))
                    if np.isfinite(part["num_pin_events"].values).any()
                    else np.nan,
                    pinned_in_clusters_median=float(np.nanmedian(part["pinned_in_clusters"].values))
                    if np.isfinite(part["pinned_in_clusters"].values).any()
                    else np.nan,
                    same_as_smallest_scale=float(np.mean(same)),
                )
                rows.append(row)
    import pandas as pd

    table = pd.DataFrame(rows)
    table.to_csv(out / "sweep_summary.csv", index=False, float_format="%.6g")
    return rows


def reproduce(
    out_dir="adaptive-regime",
    *,
    quick: bool = False,
    progress: bool = False,
    config: AdaptiveRegimeConfig | None = None,
    command: str | None = None,
    checkpoint_dir=None,
) -> dict:
    """Runs every experiment of `config` (default: full size, or `quick_config()` with
    `quick=True`) and writes into `out_dir`: for the 3-point 2-D example and its 1-D
    analogue `example_2d.png`, `line_1d.png` (one seed's breakplanes, the ensemble's
    clusters and pins over time), `*_statistics.png`, `*_seeds.csv` (one row per seed),
    `*_time.csv` (quartiles over seeds at each save time), `*_events.csv` (every crossing
    and pin of the event logs), `*.nc` (the first seeds' series); `gd_check.png/.csv`
    (gradient descent against the pins), `loss_slice.png/.csv/.nc`, `sweep.png`,
    `sweep.csv`, `sweep_summary.csv`, `sweep.nc`; `summary.json` and `summary.txt`.

    With `checkpoint_dir`, every finished ensemble (each chunk of seeds) is kept there
    by `gradflow.flow_ensemble`, so a rerun recomputes only what is missing.

    **Returns:** the summary."""
    import pandas as pd

    from .figures import (
        _pyplot,
        example_figure,
        gd_figure,
        slice_figure,
        statistics_figure,
        sweep_figure,
    )

    config = config or (quick_config() if quick else AdaptiveRegimeConfig())
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    command = command or f"gradflow reproduce adaptive-regime{' --quick' if quick else ''}"
    seconds = {}
    load = {"start": _load()}

    def timed(name, f, *args, **kwargs):
        start = time.perf_counter()
        value = f(*args, **kwargs)
        seconds[name] = time.perf_counter() - start
        load[name] = _load()
        return value

    def save(fig, name):
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)

    summary = dict(paper=PAPER, quick=quick, command=command)

    # The 3-point 2-D example and the 1-D analogue.
    for dim, name in ((2, "example_2d"), (1, "line_1d")):
        ds, sol = timed(name, example, config, dim=dim, progress=progress,
                        checkpoint_dir=checkpoint_dir)  # fmt: skip
        _write_example(ds, out, name)
        save(example_figure(ds), name)
        save(statistics_figure(ds), f"{name}_statistics")
        summary[name] = _example_summary(ds)
        if dim == 2:
            x, y = config.data_2d()
            gd = timed("gd_check", gd_check, config, sol, x, y)
            gd.to_dataframe().reset_index().to_csv(out / "gd_check.csv", index=False,
                                                   float_format="%.8g")  # fmt: skip
            save(gd_figure(gd), "gd_check")
            summary["gd_check"] = dict(
                seed=int(gd.attrs["seed"]),
                pins=int(gd.sizes["pin"]),
                rates=[float(r) for r in gd.rate.values],
                distance_over_rate_median=[
                    float(np.nanmedian(v)) for v in gd["distance_over_rate_median"].values
                ],
                distance_over_rate_p90_max=[
                    float(np.nanmax(v)) for v in gd["distance_over_rate_p90"].values
                ],
                distance_over_rate_max=[
                    float(np.nanmax(v)) for v in gd["distance_over_rate_max"].values
                ],
                within_rate=[float(np.nanmean(v)) for v in gd["within_rate"].values],
                unpinned_median=[float(np.nanmedian(v)) for v in gd["unpinned_median"].values],
                gd_relative_distance_at_stop=[
                    float(v) for v in gd["gd_relative_distance_at_stop"].values
                ],
            )
            sl = timed("loss_slice", loss_slices, config, ds)
            _netcdf(sl, out / "loss_slice.nc")
            kinds = sl["kind"].values
            pd.DataFrame(
                dict(
                    point=sl.point.values,
                    valley_fraction=(kinds == 0).mean(axis=1),
                    ridge_fraction=(kinds == 1).mean(axis=1),
                    crease_fraction=(kinds == 2).mean(axis=1),
                )
            ).to_csv(out / "loss_slice.csv", index=False, float_format="%.6g")
            save(slice_figure(sl), "loss_slice")
            summary["loss_slice"] = dict(
                seed=int(sl.attrs["seed"]),
                time=float(sl.attrs["time"]),
                loss=float(sl.attrs["loss"]),
                neuron=int(sl.attrs["neuron"]),
                point=int(sl.attrs["pinned_point"]),
                kind_here=str(sl.attrs["kind_here"]),
                slopes_here=[
                    float(sl.attrs["slope_below_here"]),
                    float(sl.attrs["slope_above_here"]),
                ],  # fmt: skip
                fractions={
                    int(j): {
                        n: float((kinds[j] == c).mean())
                        for c, n in enumerate(("valley", "ridge", "crease"))
                    }  # fmt: skip
                    for j in sl.point.values
                },
            )

    # Clusters and pins vs init scale, width and activation.
    sw = timed("sweep", sweep, config, progress=progress, checkpoint_dir=checkpoint_dir)
    summary["sweep"] = _sweep_tables(sw, out)
    _netcdf(sw, out / "sweep.nc")
    save(sweep_figure(sw), "sweep")

    summary.update(
        seconds=seconds,
        load=load,
        machine=f"{platform.platform()}, {jax.default_backend()}, {os.cpu_count()} CPUs",
        config=dict(
            width=config.width,
            scale=config.scale,
            num_seeds=config.num_seeds,
            activation=config.activation,
            sweep_widths=list(config.sweep_widths),
            sweep_scales=list(config.sweep_scales),
            sweep_seeds=config.sweep_seeds,
            sweep_activations=list(config.sweep_activations),
            t1=config.t1,
            loss_tol=config.loss_tol,
            stationarity_tol=config.stationarity_tol,
            rtol=config.rtol,
            cluster_tol=config.cluster_tol,
            cluster_tols=list(config.cluster_tols),
            growth_floor=config.growth_floor,
            pin_tol=config.pin_tol,
            points_2d=[list(p) for p in config.points_2d],
            targets_2d=list(config.targets_2d),
            points_1d=list(config.points_1d),
            targets_1d=list(config.targets_1d),
        ),  # fmt: skip
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.txt").write_text(summary_text(summary) + "\n")
    return summary


def _q(v, fmt=".3g"):
    if v is None:
        return "—"
    return f"{format(v[1], fmt)} [{format(v[0], fmt)}, {format(v[2], fmt)}]"


def _example_lines(name, title, e) -> list[str]:
    lines = [
        f"{title}: {e['activation']}, width {e['width']}, ε = {e['scale']:g}, {e['seeds']} "
        f"seeds ({name}_seeds.csv, {name}_time.csv): fitted (loss ≤ loss_tol·L0) "
        f"{e['fitted']}/{e['seeds']}, stop reasons {e['stop_reasons']} (1 fitted, 2 "
        f"stationary, 0 t1), failed {e['failed']}; t_stop median [quartiles] "
        f"{_q(e['t_stop_quartiles'])}",
        f"  clusters (≥ 2 grown neurons within the tolerance) per seed "
        f"{_q(e['clusters_quartiles'])}; "
        f"seeds with one {e['with_cluster']}/{e['seeds']}; largest cluster size: histogram "
        f"{e['largest_histogram']} (grown neurons), {e['largest_all_histogram']} (all "
        f"neurons); median largest by tolerance {e['largest_by_tol']}; grown neurons "
        f"{_q(e['grown_quartiles'])}",
        f"  formation time of the largest cluster {_q(e['formation_quartiles'])}; response "
        f"alignment within clusters of grown neurons (mean cosine) "
        f"{_q(e['alignment_quartiles'])}, lowest "
        f"{'—' if e['alignment_min'] is None else format(e['alignment_min'], '.3g')}",
    ]
    if "pins_end_total" in e:
        lines.append(
            f"  pins (event log): pinned neurons at the end {_q(e['pinned_neurons_quartiles'])}; "
            f"most points held by one neuron at the end: histogram {e['max_points_histogram']}, "
            f"ever {e['max_points_ever']}; pins begun {e['pin_events_total']}, released "
            f"{e['releases_total']}, held at the end {e['pins_end_total']}; crossings "
            f"{e['crossings_total']}; median pin duration per seed "
            f"{_q(e['pin_duration_quartiles'])}; log vs end state: "
            f"{e['log_state_mismatch_total']} pairs differ, of which "
            f"{e['released_on_point_total']} released by the log at a rest point and still on "
            f"the point to rounding ({name}_events.csv); fraction of clustered grown neurons "
            f"that hold a pin at the end {_q(e['pinned_in_clusters_quartiles'])}"
        )
    return lines


def summary_text(summary: dict) -> str:
    """The headline numbers, each with the file it comes from."""
    lines = [
        f"adaptive regime ({summary['paper']}){' [quick]' if summary['quick'] else ''}",
        f"command: {summary['command']}",
    ]
    lines += _example_lines("example_2d", "3-point 2-D example", summary["example_2d"])
    lines += _example_lines("line_1d", "1-D analogue", summary["line_1d"])
    g = summary["gd_check"]
    lines.append(
        f"gradient descent vs the exact flow's pins (seed {g['seed']}, {g['pins']} pins; "
        f"gd_check.csv): step sizes {g['rates']}: distance of the pinned point from the GD "
        f"breakplane / (η R), median over pins of the median "
        f"{[round(v, 3) for v in g['distance_over_rate_median']]}, "
        f"largest p90 {[round(v, 3) for v in g['distance_over_rate_p90_max']]}, largest max "
        f"{[round(v, 3) for v in g['distance_over_rate_max']]}; fraction of iterates within "
        f"η R {[round(v, 3) for v in g['within_rate']]}; unpinned points of the same "
        f"neurons: median distance / R {[float(f'{v:.3g}') for v in g['unpinned_median']]}; "
        f"GD's parameters at the flow's stop, relative distance "
        f"{[float(f'{v:.3g}') for v in g['gd_relative_distance_at_stop']]}"
    )
    s = summary["loss_slice"]
    lines.append(
        f"loss slice (seed {s['seed']}, neuron {s['neuron']} pinned at point {s['point']}, "
        f"t = {s['time']:.3g}, loss {s['loss']:.4g}; loss_slice.csv): the kink across the "
        f"pinned point's surface is a {s['kind_here']} (one-sided slopes along u "
        f"{s['slopes_here'][0]:.3g}, {s['slopes_here'][1]:.3g}); fraction of angles where "
        "each point's curve is valley/ridge/crease: "
        + "; ".join(
            f"point {j}: {v['valley']:.2f}/{v['ridge']:.2f}/{v['crease']:.2f}"
            for j, v in s["fractions"].items()
        )
    )
    lines.append(
        "sweep (sweep_summary.csv; medians over seeds; cluster = ≥ 2 grown neurons within "
        "the tolerance; near-pinned = grown neurons whose breakplane passes within 1e-6 R of "
        "a data point):"
    )
    for row in summary["sweep"]:
        lines.append(
            f"  {row['activation']:>10} m={row['width']:<3} ε={row['scale']:<7g} fitted "
            f"{row['fitted_fraction']:.2f}, seeds with a cluster {row['cluster_fraction']:.2f}, "
            f"largest/m {row['largest_fraction_median']:.2f}, grown/m "
            f"{row['grown_fraction_median']:.2f}, near-pinned {row['near_pinned_median']:.2f}, "
            f"pinned neurons {row['pinned_neurons_median']:.3g}, pins begun "
            f"{row['pin_events_median']:.3g}, clustered that hold a pin "
            f"{row['pinned_in_clusters_median']:.2f}, alignment {row['alignment_median']:.3g}, "
            f"seeds ending as at ε = {min(r['scale'] for r in summary['sweep']):g}: "
            f"{row['same_as_smallest_scale']:.2f}"
        )
    lines.append(
        "seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items())
        + f"; load average (1, 5, 15 min) at the start {summary['load']['start']}, after the "
        f"sweep {summary['load'].get('sweep', '—')}; {summary['machine']}"
    )
    return "\n".join(lines)
