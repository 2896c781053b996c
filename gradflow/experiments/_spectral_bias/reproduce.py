"""Every figure of the spectral-bias reproduction from one call: configuration → `run`'s
datasets → fits → figures, each PNG beside its numbers (CSV tables and NetCDF
datasets), and a `summary.txt` whose every number names the table it comes from."""

import json
import pathlib
import platform
import time

import jax
import numpy as np

from .config import quick_config, SpectralBiasConfig
from .run import designs, fit_rate, frozen_regime, lazy_regime, spectra


PAPER = "Sahs, Pyle, Anselmi & Patel, arXiv:2503.10587"


def _table(ds, names):
    """`(width, seed)` variables of `ds` as one long table."""
    return ds[names].to_dataframe().reset_index()


DESCRIPTION = "spectral bias and the kernel regime: Sahs, Pyle, Anselmi & Patel, arXiv:2503.10587"


def reproduce(
    out_dir="spectral-bias",
    *,
    quick: bool = False,
    progress: bool = False,
    config: SpectralBiasConfig | None = None,
    command: str | None = None,
    checkpoint_dir=None,
) -> dict:
    """Runs every experiment of `config` (default: full size, or `quick_config()` with
    `quick=True`) and writes into `out_dir`: `NAME.png` beside `NAME.csv` (and
    `NAME.nc`, the labelled dataset) for `spectra`, `kernel_spline`, `width_gap`,
    `ntk`, `designed`; `fits.json`, `summary.json` and `summary.txt`.

    **Returns:** the summary."""
    from .figures import (
        _pyplot,
        design_figure,
        ntk_figure,
        spectra_figure,
        spline_figure,
        width_gap_figure,
    )

    if checkpoint_dir is not None:
        raise ValueError(
            "checkpoint_dir: spectral-bias keeps no checkpoints (its full run takes minutes); "
            "leave it out"
        )
    config = config or (quick_config() if quick else SpectralBiasConfig())
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    command = command or f"gradflow reproduce spectral-bias{' --quick' if quick else ''}"
    seconds = {}

    def timed(name, f, *args, **kwargs):
        start = time.perf_counter()
        value = f(*args, **kwargs)
        seconds[name] = time.perf_counter() - start
        return value

    def save(fig, name):
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)

    def netcdf(ds, name):
        try:
            ds.to_netcdf(out / f"{name}.nc")
        except (ImportError, ValueError) as error:  # no netCDF writer installed
            print(f"{name}.nc not written ({error})")

    # Figure 1: φ and ρ_φ.
    sp = timed("spectra", spectra, config)
    table = sp[["rho", "rho_numerical", "relative_difference"]].to_dataframe().reset_index()
    table.to_csv(out / "spectra.csv", index=False, float_format="%.10g")
    agreement = sp["max_relative_difference"].to_dataframe().reset_index()
    agreement.to_csv(out / "spectra_agreement.csv", index=False, float_format="%.3g")
    netcdf(sp, "spectra")
    save(spectra_figure(sp), "spectra")

    # Kernel regime, frozen ReLU layer; its interpolant is a cubic spline.
    frozen = timed("frozen", frozen_regime, config, progress=progress)
    _table(frozen, ["limit_gap", "flow_gap", "flow_error", "kernel_error"]).to_csv(
        out / "width_gap_frozen.csv", index=False, float_format="%.6g"
    )
    frozen[["f_infinity"]].to_dataframe().reset_index().to_csv(
        out / "kernel_spline.csv", index=False, float_format="%.12g"
    )
    netcdf(frozen, "width_gap_frozen")
    save(spline_figure(frozen), "kernel_spline")

    # Lazy regime: every parameter trained, against the NTK's interpolant.
    lazy = timed("lazy", lazy_regime, config, progress=progress)
    _table(
        lazy, ["gap", "linear_gap", "nonlinear_gap", "relative_move", "train_residual", "steps"]
    ).to_csv(out / "width_gap_lazy.csv", index=False, float_format="%.6g")
    netcdf(lazy, "width_gap_lazy")

    fits = {
        "frozen": fit_rate(frozen.width.values, frozen["limit_gap"].values),
        "lazy": fit_rate(lazy.width.values, lazy["gap"].values),
        "lazy_linear": fit_rate(lazy.width.values, lazy["linear_gap"].values),
        "lazy_nonlinear": fit_rate(lazy.width.values, lazy["nonlinear_gap"].values),
    }
    # The flow-vs-linearised gap is resolved only where it stands clear of the flow's own
    # accuracy floor, the training residual (rtol is relative to ‖θ‖, which grows like
    # √m while f moves O(1)): fit it over the widths where its median is ≥ 3x the
    # median residual.
    resolved = lazy["nonlinear_gap"].median("seed") >= 3 * lazy["train_residual"].median("seed")
    if int(resolved.sum()) >= 2:
        part = lazy.sel(width=lazy.width.values[resolved.values])
        fits["lazy_nonlinear_resolved"] = fit_rate(part.width.values, part["nonlinear_gap"].values)
        fits["lazy_nonlinear_resolved"]["widths"] = [int(m) for m in part.width.values]
    flowed = frozen["flow_gap"].dropna("width", how="all")
    if flowed.sizes["width"] >= 2:
        fits["frozen_flow"] = fit_rate(flowed.width.values, flowed.values)
    (out / "fits.json").write_text(json.dumps(fits, indent=2) + "\n")
    save(width_gap_figure(frozen, lazy, fits), "width_gap")
    save(ntk_figure(lazy), "ntk")
    lazy[["f_ntk", "f_flow_seed0"]].to_dataframe().reset_index().to_csv(
        out / "ntk.csv", index=False, float_format="%.12g"
    )

    # Designed activations.
    ds_design = timed("designs", designs, config)
    columns = ["rho_target", "rho_measured", "relative_difference"]
    ds_design[columns].to_dataframe().reset_index().to_csv(
        out / "designed.csv", index=False, float_format="%.10g"
    )
    columns = ["max_relative_difference", "network_gap", "band_fraction", "condition_number"]
    ds_design[columns].to_dataframe().reset_index().to_csv(
        out / "designed_summary.csv", index=False, float_format="%.6g"
    )
    netcdf(ds_design, "designed")
    save(design_figure(ds_design), "designed")

    def medians(ds, name):
        return {int(m): float(v) for m, v in zip(ds.width.values, ds[name].median("seed").values)}

    summary = dict(
        paper=PAPER,
        quick=quick,
        command=command,
        spectra_agreement={
            str(a): (None if np.isnan(v) else float(v))
            for a, v in zip(sp.activation.values, sp["max_relative_difference"].values)
        },
        cubic_residual=float(frozen.attrs["cubic_residual"]),
        quadratic_residual=float(frozen.attrs["quadratic_residual"]),
        frozen_median_gap=medians(frozen, "limit_gap"),
        lazy_median_gap=medians(lazy, "gap"),
        lazy_median_linear_gap=medians(lazy, "linear_gap"),
        lazy_median_nonlinear_gap=medians(lazy, "nonlinear_gap"),
        lazy_median_relative_move=medians(lazy, "relative_move"),
        lazy_median_train_residual=medians(lazy, "train_residual"),
        lazy_max_steps=int(np.nanmax(lazy["steps"].values)),
        lazy_failed=int(np.isnan(lazy["gap"].values).sum()),
        seeds=config.num_seeds,
        fits=fits,
        designs={
            str(d): dict(
                max_relative_difference=float(ds_design["max_relative_difference"].sel(design=d)),
                network_gap=float(ds_design["network_gap"].sel(design=d)),
                band_fraction=float(ds_design["band_fraction"].sel(design=d)),
            )
            for d in ds_design.design.values
        },
        seconds=seconds,
        machine=f"{platform.platform()}, {jax.default_backend()}",
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.txt").write_text(summary_text(summary) + "\n")
    return summary


def _fit_line(fit: dict) -> str:
    return (
        f"m^{fit['slope']:.3f} ± {fit['stderr']:.3f} (bootstrap 95 % [{fit['low']:.3f}, "
        f"{fit['high']:.3f}])"
    )


def summary_text(summary: dict) -> str:
    """The headline numbers, each with the file it comes from."""
    fits = summary["fits"]
    agree = ", ".join(
        f"{a} {'—' if v is None else format(v, '.1e')}"
        for a, v in summary["spectra_agreement"].items()
    )
    frozen = ", ".join(f"{m}: {v:.3e}" for m, v in summary["frozen_median_gap"].items())
    lazy = ", ".join(f"{m}: {v:.3e}" for m, v in summary["lazy_median_gap"].items())
    lines = [
        f"spectral bias ({summary['paper']}){' [quick]' if summary['quick'] else ''}",
        f"command: {summary['command']}",
        f"ρ_φ closed form vs numerical route, max relative difference where |φ̂| > 1e-6 max "
        f"(spectra_agreement.csv; — = no numerical route: kinks, or φ ~ 1/|z|): {agree}",
        f"frozen ReLU layer, kernel interpolant between the data (kernel_spline.csv): cubic "
        f"fit residual {summary['cubic_residual']:.1e}, quadratic "
        f"{summary['quadratic_residual']:.1e}",
        f"frozen ReLU layer, median sup gap of the flow's limit pinv(Φ)y to f_∞ "
        f"({summary['seeds']} seeds; width_gap_frozen.csv): {frozen}; fitted "
        f"{_fit_line(fits['frozen'])} (fits.json 'frozen')",
    ]
    if "frozen_flow" in fits:
        lines.append(f"frozen ReLU layer, the flow itself: {_fit_line(fits['frozen_flow'])}")
    lines += [
        f"lazy regime (erf, all parameters, centred init), median sup gap of the flow to the "
        f"NTK interpolant ({summary['seeds']} seeds, {summary['lazy_failed']} failed runs; "
        f"width_gap_lazy.csv): {lazy}; fitted {_fit_line(fits['lazy'])} (fits.json 'lazy')",
        f"  its parts: linearised limit vs NTK {_fit_line(fits['lazy_linear'])} (Monte Carlo "
        f"of the kernel); flow vs linearised {_fit_line(fits['lazy_nonlinear'])} (laziness)"
        + (
            f"; flow vs linearised over the widths where it is ≥ 3x the training residual "
            f"{fits['lazy_nonlinear_resolved']['widths']}: "
            f"{_fit_line(fits['lazy_nonlinear_resolved'])}"
            if "lazy_nonlinear_resolved" in fits
            else ""
        )
        + "; median training residual max|f(x_i) − y_i| "
        + ", ".join(f"{m}: {v:.1e}" for m, v in summary["lazy_median_train_residual"].items())
        + "; median relative parameter move "
        + ", ".join(f"{m}: {v:.1e}" for m, v in summary["lazy_median_relative_move"].items()),
    ]
    for name, d in summary["designs"].items():
        lines.append(
            f"designed {name}: measured ρ (numerical route, by registered name) vs target, max "
            f"relative difference {d['max_relative_difference']:.1e} where |φ̂| > 1e-6 max; "
            f"kernel interpolant's energy in the pass band {d['band_fraction']:.6f}; sup gap "
            f"of a random-features net to it on the data's interval, relative to max|y|: "
            f"{d['network_gap']:.3f} (designed_summary.csv)"
        )
    lines.append(
        "seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items())
        + f"; {summary['machine']}"
    )
    return "\n".join(lines)
