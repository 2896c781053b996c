"""Figures of the single-neuron reproduction. Drawing only: every number shown is
computed beforehand (by `reproduce`'s summaries) and passed in."""

import numpy as np


_CLASS_STYLE = {
    1: ("Q¹ (neuron 1)", "tab:blue"),
    2: ("Q² (neuron 2)", "tab:orange"),
    -1: ("shared", "tab:green"),
    0: ("not recovered", "tab:gray"),
}


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def generalisation_error_figure(tables: dict):
    """`tables`: `{design: DataFrame(n, scale, mean_error, recovered)}`. Top: the mean
    generalisation error over seeds (the paper's Fig. 1); bottom: the fraction of seeds
    that recovered the target, which the mean (dominated by the failures) hides."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        2, len(tables), figsize=(5.2 * len(tables), 7), squeeze=False, sharex="col"
    )
    for column, (design, table) in enumerate(tables.items()):
        top, bottom = axes[0, column], axes[1, column]
        for scale, rows in table.groupby("scale", sort=True):
            top.semilogy(rows["n"], rows["mean_error"], "o-", label=f"ε = {scale:g}")
            bottom.plot(rows["n"], rows["recovered"], "o-", label=f"ε = {scale:g}")
        top.axhline(1e-8, color="k", lw=0.8, ls=":", label="recovery threshold")
        top.set(ylabel="generalisation error (mean over seeds)", title=f"{design} design")
        top.legend(fontsize=8)
        bottom.set(xlabel="sample size n", ylabel="fraction recovered", ylim=(-0.05, 1.05))
    fig.tight_layout()
    return fig


def time_shift_figure(curves, fit: dict):
    """`curves`: list of `(time, loss, scale, seed)`; `fit`: the `time_shift` summary."""
    plt = _pyplot()
    fig, (raw, shifted, esc) = plt.subplots(1, 3, figsize=(15, 4))
    scales = sorted({c[2] for c in curves})
    colours = dict(zip(scales, plt.cm.viridis(np.linspace(0, 0.9, len(scales)))))
    for t, loss, scale, seed in curves:
        style = dict(color=colours[scale], lw=1, alpha=0.8)
        raw.semilogy(t, loss, label=f"ε = {scale:g}" if seed == 0 else None, **style)
        shifted.semilogy(
            t - fit["slope"] * np.log(1 / scale), loss, ls=("-", "--", ":", "-.")[seed % 4], **style
        )
    raw.set(xscale="symlog", xlabel="t", ylabel="training loss", title="raw")
    raw.legend(fontsize=8)
    shifted.set(
        xscale="symlog",
        xlabel="t − s·log(1/ε)",
        ylabel="training loss",
        title=f"shifted (C₁/C₂ = {fit['imbalance_ratio']:g}, s fitted)",
    )
    x = np.asarray(fit["log_inverse_scale"])
    for seed, times in enumerate(fit["escape_times"]):
        esc.plot(x, times, "o", label=f"seed {seed}")
    grid = np.linspace(x.min(), x.max(), 2)
    esc.plot(grid, fit["slope"] * grid + np.mean(fit["intercepts"]), "k-", lw=1)
    esc.set(
        xlabel="log(1/ε)",
        ylabel="escape time",
        title=f"slope {fit['slope']:.4f} = 1/{1 / fit['slope']:.4f}; λ = {fit['growth_rate']:.4f}",
    )
    esc.legend(fontsize=7)
    fig.tight_layout()
    return fig


def basin_figure(table, boundaries: dict, paper=(1.35, 0.74)):
    """`table`: DataFrame(seed, imbalance_ratio, growing_mode_ratio, target_set);
    `boundaries`: `{"imbalance_ratio": basin_boundaries(...), "growing_mode_ratio": ...}`."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    titles = {
        "imbalance_ratio": "|C₁/C₂| (the paper's axis)",
        "growing_mode_ratio": "|α₁/α₂| (unstable-mode amplitudes)",
    }
    for ax, column in zip(axes, titles):
        for code, (label, colour) in _CLASS_STYLE.items():
            rows = table[table["target_set"] == code]
            if len(rows):
                ax.scatter(rows["seed"], rows[column], s=6, color=colour, label=label)
        b = boundaries[column]
        for value in (b["upper"], b["lower"]):
            ax.axhline(value, color="k", lw=1)
        if column == "imbalance_ratio":
            for value in paper:
                ax.axhline(value, color="r", lw=1, ls="--")
        ax.set(
            yscale="log",
            xlabel="seed",
            ylabel=titles[column],
            title=f"boundaries (black) {b['upper']:.3g} / {b['lower']:.3g}"
            + ("; paper (red) 1.35 / 0.74" if column == "imbalance_ratio" else ""),
        )
        ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    return fig


def gaussian_tiny_init_figure(table, scale: float, threshold: float):
    """`table`: DataFrame(n, seed, generalisation_error) at init scale `scale`; errors
    below `threshold` are drawn at it, as in the paper's Fig. 4."""
    plt = _pyplot()
    fig, (ax, frac) = plt.subplots(1, 2, figsize=(11, 4))
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.15, 0.15, len(table))
    ax.scatter(
        table["n"] + jitter, np.maximum(table["generalisation_error"], threshold), s=8, alpha=0.6
    )
    ax.set(
        yscale="log",
        xlabel="sample size n",
        ylabel="generalisation error (clipped at threshold)",
        title=f"Gaussian inputs, ε = {scale:g}: one dot per seed",
    )
    recovered = table.groupby("n")["generalisation_error"].apply(lambda e: np.mean(e < threshold))
    frac.plot(recovered.index, recovered.values, "o-")
    frac.set(xlabel="sample size n", ylabel="fraction recovered", ylim=(-0.05, 1.05))
    fig.tight_layout()
    return fig


def wide_rational_figure(curves, neurons, slope: float):
    """`curves`: list of `(time, loss, scale, seed)`; `neurons`: DataFrame(run, neuron,
    imbalance_ratio, output_rms) at the end; `slope`: time shift per unit log(1/ε)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for t, loss, scale, seed in curves:
        left.semilogy(t - slope * np.log(1 / scale), loss, label=f"ε = {scale:g} (seed {seed})")
    left.set(
        xlim=(-10, None),
        xscale="symlog",
        xlabel="t − log(1/ε)/λ",
        ylabel="training loss",
        title="width 1000, σ(z) = z/(1+z²), labels tanh(s+1)",
    )
    left.legend(fontsize=7)
    for run, rows in neurons.groupby("run"):
        right.semilogy(rows["imbalance_ratio"], rows["output_rms"], ".", ms=2, label=run)
    right.set(
        xlabel="C_i/C_1 at init",
        ylabel="RMS of a_i σ(w_i·x) at the end",
        title="which neurons stay active",
    )
    right.legend(fontsize=7, markerscale=4)
    fig.tight_layout()
    return fig


def thresholds_figure(table, summary: dict):
    """`table`: DataFrame(experiment, n, probability); `summary`: the thresholds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, rows in table.groupby("experiment", sort=False):
        ax.plot(rows["n"], rows["probability"], "o-", label=name)
    ax.axvline(
        summary["optimistic_sample_size_tangent_rank"],
        color="k",
        ls="--",
        label="optimistic (tangent rank)",
    )
    sep = summary["separation_sample_size"].get("interval")
    if sep is not None and np.isfinite(sep):
        ax.axvline(sep, color="r", ls=":", label="separation (estimated)")
    ax.set(
        xlabel="sample size n",
        ylabel="recovery probability",
        ylim=(-0.05, 1.05),
        title="recovery probability vs n",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
