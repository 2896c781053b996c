"""The digits experiment from one call: configuration → `run`'s datasets → figures, each
PNG beside its numbers (CSV tables and NetCDF datasets), and a `summary.txt` whose every
number names the table it comes from."""

import dataclasses
import json
import os
import pathlib
import platform
import time

import jax
import numpy as np

from .config import DigitsConfig, quick_config
from .measures import band_energy
from .run import adaptive_regime, images_and_labels, kernel_regime, seed_data


PAPER = "Sahs, Pyle, Anselmi & Patel, arXiv:2503.10587"
# A plain literal: the command line reads it without importing this module.
DESCRIPTION = (
    "Spectral bias on handwritten digits, activations in the kernel and adaptive regimes "
    "(Sahs, Pyle, Anselmi & Patel, arXiv:2503.10587)"
)


def _load_or_run(directory, name: str, compute, seconds: dict, loads: dict):
    """The dataset `name` from `directory` if a previous run left it there (its compute
    time and the load average when it ended from `seconds.json` there), else
    `compute()`, timed, and saved there."""
    import xarray as xr

    path = directory and directory / f"{name}.nc"
    record = directory and directory / "seconds.json"
    if path is not None and path.exists():
        kept = json.loads(record.read_text()) if record.exists() else {}
        seconds[name] = kept.get(name, float("nan"))
        loads[name] = kept.get("load_average", {}).get(name)
        return xr.load_dataset(path)
    start = time.perf_counter()
    ds = compute()
    seconds[name] = time.perf_counter() - start
    loads[name] = [round(v, 2) for v in os.getloadavg()]
    if path is not None:
        for variable in ds.variables.values():
            variable.encoding.pop("char_dim_name", None)
        ds.to_netcdf(path)
        kept = json.loads(record.read_text()) if record.exists() else {}
        kept[name] = seconds[name]
        kept.setdefault("load_average", {})[name] = loads[name]
        record.write_text(json.dumps(kept, indent=2) + "\n")
    return ds


def run_all(config: DigitsConfig, *, progress: bool = False, checkpoint_dir=None):
    """`(kernel, adaptive, seconds, loads)`: both regimes, the adaptive one activation by
    activation, the seconds each part took to compute and the load average (1, 5, 15
    min) when it ended; with `checkpoint_dir`, each
    finished part is kept there as NetCDF (with its seconds in `seconds.json`) and a
    rerun with the same directory reuses it (so an interrupted run loses at most one
    activation's adaptive flow)."""
    import xarray as xr

    directory = None
    if checkpoint_dir is not None:
        directory = pathlib.Path(checkpoint_dir)
        directory.mkdir(parents=True, exist_ok=True)
        stamp = directory / "config.json"
        text = json.dumps(
            {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}, sort_keys=True
        )
        if stamp.exists() and stamp.read_text() != text:
            raise ValueError(
                f"`checkpoint_dir` {directory} holds a run of another configuration; use an "
                "empty directory (or the one of this configuration)."
            )
        stamp.write_text(text)
    seconds, loads = {}, {}
    kernel = _load_or_run(
        directory, "kernel", lambda: kernel_regime(config, progress=progress), seconds, loads
    )
    parts = []
    for name in config.activations:
        one = dataclasses.replace(config, activations=(name,))
        parts.append(
            _load_or_run(
                directory,
                f"adaptive_{name}",
                lambda one=one: adaptive_regime(one, progress=progress),
                seconds,
                loads,
            )
        )
    adaptive = xr.concat(parts, "activation", data_vars="all", coords="minimal", compat="override")
    return kernel, adaptive, seconds, loads


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, float)
    return float(np.mean(values)), float(np.std(values, ddof=1))


def reproduce(
    out="digits",
    *,
    quick: bool = False,
    progress: bool = True,
    command: str | None = None,
    checkpoint_dir=None,
    config: DigitsConfig | None = None,
) -> dict:
    """Runs both regimes of `config` (default: full size, or `quick_config()` with
    `quick=True`) and writes into `out`: `accuracy`, `kernel_scales`, `dct_filtered`,
    `line_spectra` (PNG beside CSV), `kernel.nc`, `adaptive.nc`, `summary.json`,
    `summary.txt`.

    **Returns:** the summary."""
    from .figures import _pyplot, accuracy_figure, filtered_figure, scales_figure, spectra_figure

    config = config or (quick_config() if quick else DigitsConfig())
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    command = command or f"gradflow reproduce digits{' --quick' if quick else ''}"
    kernel, adaptive, seconds, loads = run_all(
        config, progress=progress, checkpoint_dir=checkpoint_dir
    )

    def save(fig, name):
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)

    for ds, name in ((kernel, "kernel"), (adaptive, "adaptive")):
        for variable in ds.variables.values():
            variable.encoding.pop("char_dim_name", None)
        ds.to_netcdf(out / f"{name}.nc")

    # Accuracies, one row per (regime, activation, seed).
    import pandas as pd

    scale = config.scale
    rows = []
    for name in config.activations:
        for s in range(config.num_seeds):
            k, a = kernel.sel(activation=name, seed=s), adaptive.sel(activation=name, seed=s)
            rows.append(dict(
                activation=name, seed=s,
                kernel_at_tol=float(k["test_accuracy"]),
                kernel_time_at_tol=float(k["time_at_tol"].sel(scale=scale)),
                kernel_limit=float(k["test_accuracy_limit"].sel(scale=scale)),
                kernel_train_loss_limit=float(k["train_loss_limit"].sel(scale=scale)),
                adaptive=float(a["test_accuracy"]),
                adaptive_train_loss=float(a["train_loss"]),
                adaptive_t_stop=float(a["t_stop"]),
                adaptive_steps=float(a["steps"]),
                adaptive_status=int(a["status"]),
                adaptive_weight_norm=float(a["weight_norm"]),
            ))  # fmt: skip
    pd.DataFrame(rows).to_csv(out / "accuracy.csv", index=False, float_format="%.6g")
    save(accuracy_figure(kernel, adaptive), "accuracy")

    kernel[
        ["test_accuracy_at_tol", "test_accuracy_limit", "train_loss_limit", "time_at_tol"]
    ].to_dataframe().reset_index().to_csv(  # noqa: E501
        out / "kernel_scales.csv", index=False, float_format="%.6g"
    )
    save(scales_figure(kernel), "kernel_scales")

    images, labels = images_and_labels(config)
    energy = np.mean(
        [
            band_energy(seed_data(config, images, labels, s)["x_test"])
            for s in range(config.num_seeds)
        ],
        0,
    )
    filtered = []
    for ds in (kernel, adaptive):
        table = ds[["lowpass_accuracy", "highpass_accuracy"]].to_dataframe().reset_index()
        table.insert(0, "regime", ds.attrs["regime"])
        filtered.append(table)
    filtered = pd.concat(filtered)
    filtered.to_csv(out / "dct_filtered.csv", index=False, float_format="%.6g")
    pd.DataFrame(
        dict(band=np.arange(len(energy)), energy=energy, share=energy / energy.sum())
    ).to_csv(out / "dct_band_energy.csv", index=False, float_format="%.6g")
    save(filtered_figure(kernel, adaptive, energy), "dct_filtered")

    spectra = []
    fractions = []
    for ds in (kernel, adaptive):
        table = ds["spectrum"].mean("seed").to_dataframe().reset_index()
        table.insert(0, "regime", ds.attrs["regime"])
        spectra.append(table)
        table = ds["high_fraction"].to_dataframe().reset_index()
        table.insert(0, "regime", ds.attrs["regime"])
        fractions.append(table)
    pd.concat(spectra).to_csv(out / "line_spectra.csv", index=False, float_format="%.6g")
    pd.concat(fractions).to_csv(out / "high_fraction.csv", index=False, float_format="%.6g")
    save(spectra_figure(kernel, adaptive), "line_spectra")

    def per_activation(ds, variable, **sel):
        return {
            str(a): _mean_std(ds[variable].sel(activation=a, **sel).values)
            for a in config.activations
        }

    # The cut-off reported in the summary: the first band at which the low-pass test
    # images hold half of the energy (so low and high pass split it about evenly).
    cut_low = cut_high = int(np.argmax(np.cumsum(energy) / energy.sum() >= 0.5))
    summary = dict(
        paper=PAPER,
        quick=quick,
        command=command,
        data="sklearn 8×8 digits"
        if config.mnist_path is None
        else f"MNIST from {config.mnist_path}",
        train_images=10 * config.train_per_class,
        test_images=int(kernel.attrs.get("test_images", 0)) or None,
        seeds=config.num_seeds,
        kernel_width=config.kernel_width,
        scale=scale,
        kernel_time=config.kernel_time,
        adaptive_width=config.adaptive_width,
        adaptive_init=config.adaptive_init,
        init_scale=config.init_scale,
        max_steps=config.max_steps,
        adaptive_t1=config.adaptive_t1,
        loss_tol=config.loss_tol,
        relu_learning_rate=config.relu_learning_rate,
        relu_method=config.relu_method,
        relu_max_steps=config.relu_max_steps,
        kernel_at_tol=per_activation(kernel, "test_accuracy"),
        kernel_limit=per_activation(kernel, "test_accuracy_limit", scale=scale),
        kernel_scales={
            str(s): per_activation(kernel, "test_accuracy_at_tol", scale=s)
            for s in config.kernel_scales
        },
        adaptive=per_activation(adaptive, "test_accuracy"),
        adaptive_reached=dict(
            zip(config.activations, map(int, (adaptive["status"] == 0).sum("seed").values))
        ),
        adaptive_stopped_at_max_steps={
            a: int((adaptive["status"].sel(activation=a) == 2).sum()) for a in config.activations
        },
        adaptive_steps={
            a: float(adaptive["steps"].sel(activation=a).max()) for a in config.activations
        },
        adaptive_t_stop=per_activation(adaptive, "t_stop"),
        adaptive_weight_norm=per_activation(adaptive, "weight_norm"),
        adaptive_method={
            a: str(adaptive["method"].sel(activation=a).values) for a in config.activations
        },
        lowpass_cut=cut_low,
        highpass_cut=cut_high,
        kernel_lowpass=per_activation(kernel, "lowpass_accuracy", band=cut_low),
        kernel_highpass=per_activation(kernel, "highpass_accuracy", band=cut_high),
        adaptive_lowpass=per_activation(adaptive, "lowpass_accuracy", band=cut_low),
        adaptive_highpass=per_activation(adaptive, "highpass_accuracy", band=cut_high),
        spectrum_cutoffs=list(config.spectrum_cutoffs),
        kernel_high_fraction={
            str(c): per_activation(kernel, "high_fraction", cutoff=c)
            for c in config.spectrum_cutoffs
        },
        adaptive_high_fraction={
            str(c): per_activation(adaptive, "high_fraction", cutoff=c)
            for c in config.spectrum_cutoffs
        },
        band_energy_share_low=float(energy[: cut_low + 1].sum() / energy.sum()),
        adaptive_hidden_move=per_activation(adaptive, "hidden_move"),
        seconds={k: round(v, 1) for k, v in seconds.items()},
        adaptive_seconds={
            a: float(adaptive["seconds"].sel(activation=a)) for a in config.activations
        },
        load_average_at_end=loads,
        machine=f"{platform.platform()}, {jax.default_backend()}, {os.cpu_count()} cores",
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.txt").write_text(summary_text(summary) + "\n")
    return summary


def _pm(pair, digits=3) -> str:
    mean, std = pair
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_text(summary: dict) -> str:
    """The headline numbers, each with the table it comes from."""
    names = list(summary["adaptive"])
    lines = [
        f"spectral bias on handwritten digits ({summary['paper']})"
        + (" [quick]" if summary["quick"] else ""),
        f"command: {summary['command']}",
        f"data: {summary['data']}; {summary['train_images']} training images per seed "
        f"(stratified), the rest for testing; inputs centred by the training mean image "
        f"and scaled to mean squared norm 1; one-hot targets in R^10, ½·mean squared "
        f"loss, prediction = argmax; {summary['seeds']} seeds (split and init); mean ± "
        f"standard deviation over seeds",
        f"kernel regime: frozen layer of {summary['kernel_width']} neurons, w = σz, b = σζ "
        f"(z, ζ standard normal), σ = {summary['scale']:g}; outer layer from a = 0 by its "
        f"gradient flow (closed form), at the time the training loss reaches "
        f"{summary['loss_tol']:g} and at t = {summary['kernel_time']:g}",
        f"adaptive regime: {summary['adaptive_width']} neurons, every weight trained, from "
        + (
            f"the kernel regime's hidden layer (σ = {summary['scale']:g}) and a ~ N(0, ε²)"
            if summary["adaptive_init"] == "outer"
            else "(a, W, b) ~ N(0, ε²)"
        )
        + f", ε = {summary['init_scale']:g}, until the training loss is "
        f"≤ {summary['loss_tol']:g} (or t = {summary['adaptive_t1']:g}, or "
        f"{summary['max_steps']} solver steps"
        + (
            f"; {summary['relu_max_steps']} for the exact flow of a kinked activation"
            if summary.get("relu_method") == "exact"
            else ""
        )
        + "); method: "
        + "; ".join(f"{a}: {m}" for a, m in summary["adaptive_method"].items()),
        "test accuracy (accuracy.csv; mean ± sd over seeds):",
    ]
    for a in names:
        lines.append(
            f"  {a:9s} kernel at loss_tol {_pm(summary['kernel_at_tol'][a])}, kernel limit "
            f"{_pm(summary['kernel_limit'][a])}, adaptive {_pm(summary['adaptive'][a])} "
            f"({summary['adaptive_reached'][a]}/{summary['seeds']} seeds reached loss_tol, "
            f"{summary['adaptive_stopped_at_max_steps'][a]} stopped at max_steps, "
            f"t_stop {_pm(summary['adaptive_t_stop'][a], 0)}, at most "
            f"{summary['adaptive_steps'][a]:.0f} steps, median ‖w_k‖ at the end "
            f"{_pm(summary['adaptive_weight_norm'][a], 2)}, ‖W − W_0‖/‖W_0‖ "
            f"{_pm(summary['adaptive_hidden_move'][a], 3)})"
        )
    lines.append("kernel regime against the frequency scale σ, at loss_tol (kernel_scales.csv):")
    for scale, values in summary["kernel_scales"].items():
        lines.append(
            f"  σ = {float(scale):g}: " + ", ".join(f"{a} {_pm(values[a])}" for a in names)
        )
    c_low, c_high = summary["lowpass_cut"], summary["highpass_cut"]
    lines += [
        f"frequency-resolved error, DCT-filtered test images (dct_filtered.csv): accuracy "
        f"with only the bands u+v ≤ {c_low} kept ({100 * summary['band_energy_share_low']:.0f} % "
        f"of the test images' energy, dct_band_energy.csv) / with only the bands u+v > "
        f"{c_high} kept:",
    ]
    for a in names:
        lines.append(
            f"  {a:9s} kernel {_pm(summary['kernel_lowpass'][a])} / "
            f"{_pm(summary['kernel_highpass'][a])}; adaptive "
            f"{_pm(summary['adaptive_lowpass'][a])} / {_pm(summary['adaptive_highpass'][a])}"
        )
    cutoffs = summary["spectrum_cutoffs"]
    lines.append(
        "share of the learned function's power along random lines above k = "
        + ", ".join(f"{c:g}" for c in cutoffs)
        + " rad per unit input distance (high_fraction.csv, line_spectra.csv):"
    )
    for a in names:
        kern = ", ".join(f"{summary['kernel_high_fraction'][str(c)][a][0]:.1e}" for c in cutoffs)
        adap = ", ".join(f"{summary['adaptive_high_fraction'][str(c)][a][0]:.1e}" for c in cutoffs)
        lines.append(f"  {a:9s} kernel {kern}; adaptive {adap}")
    lines.append(
        "seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items())
        + "; load average (1, 5, 15 min) when each part ended: "
        + ", ".join(f"{k} {v}" for k, v in summary["load_average_at_end"].items())
        + f"; {summary['machine']}"
    )
    return "\n".join(lines)
