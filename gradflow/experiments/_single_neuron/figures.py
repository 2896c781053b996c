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


def _seed_colours(seeds):
    """One colour per seed, distinct for up to 10 seeds (tab10), then tab20."""
    plt = _pyplot()
    cmap = plt.cm.tab10 if len(seeds) <= 10 else plt.cm.tab20
    return {seed: cmap(i % cmap.N) for i, seed in enumerate(seeds)}


_CLASS_NAME = {1: "Q¹", 2: "Q²", -1: "shared", 0: "none"}


def time_shift_figure(curves, fit: dict, shifted):
    """`curves`: list of `(time, loss, scale, seed)`; `fit`: the `time_shift` summary;
    `shifted`: `(tau, log10 loss (seed, scale, tau))` on the shifted-time window."""
    plt = _pyplot()
    fig, (raw, after, esc) = plt.subplots(1, 3, figsize=(16, 4.4))
    scales = sorted({c[2] for c in curves})
    seeds = sorted({c[3] for c in curves})
    scale_colour = dict(zip(scales, plt.cm.viridis(np.linspace(0, 0.9, len(scales)))))
    seed_colour = _seed_colours(seeds)
    for t, loss, scale, seed in curves:
        ok = t > 0
        raw.loglog(
            t[ok],
            loss[ok],
            color=scale_colour[scale],
            lw=0.8,
            alpha=0.7,
            label=f"ε = {scale:g}" if seed == seeds[0] else None,
        )
    raw.set(xlabel="t", ylabel="training loss", title="raw: colour = ε (all seeds)")
    raw.legend(fontsize=7)
    tau, log_loss = shifted
    ratios = fit["mode_ratio_per_seed"]
    for i, seed in enumerate(seeds):
        classes = ", ".join(_CLASS_NAME[c] for c in fit["classes_per_seed"][i])
        for j in range(log_loss.shape[1]):
            after.plot(
                tau,
                log_loss[i, j],
                color=seed_colour[seed],
                lw=1,
                alpha=0.8,
                label=f"seed {seed}: α₁/α₂ = {ratios[i]:.2f} → {classes}" if j == 0 else None,
            )
    after.set(
        xlabel="t − s·log(1/ε)",
        ylabel="log₁₀ training loss",
        title=f"shifted: colour = seed, all {log_loss.shape[1]} ε per seed\n"
        f"C₁/C₂ = {fit['imbalance_ratio']:g} for every run; gap within a seed "
        f"≤ {fit['max_gap_within_seed']:.2g}, between seeds "
        f"≥ {fit['min_gap_between_seeds']:.2g} decades",
    )
    after.legend(fontsize=6, loc="lower left")
    x = np.asarray(fit["log_inverse_scale"])
    grid = np.linspace(x.min(), x.max(), 2)
    for i, (seed, times) in enumerate(zip(seeds, fit["escape_times"])):
        esc.plot(x, times, "o", color=seed_colour[seed], ms=4)
        esc.plot(
            grid, fit["slope"] * grid + fit["intercepts"][i], "-", color=seed_colour[seed], lw=0.8
        )
    esc.set(
        xlabel="log(1/ε)",
        ylabel="escape time (loss at half its start)",
        title="one slope, one intercept per seed: slope "
        f"{fit['slope']:.4f} = 1/{1 / fit['slope']:.4f};"
        f"\nλ = {fit['growth_rate']:.4f}; intercepts spread {fit['intercept_spread']:.3g}",
    )
    fig.tight_layout()
    return fig


_ROW = {2: 0, -1: 1, 1: 2, 0: 3}


def basin_figure(families: dict, paper=(1.35, 0.74)):
    """`families`: `{init: (table, summary)}` with `basin_table` / `basin_summary` of
    each init distribution. One row per distribution, one column per ratio; each run
    a dot at its ratio, in the row of the set it reached (jittered)."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(families), 2, figsize=(12, 2.4 * len(families) + 0.6), squeeze=False
    )
    titles = {"imbalance_ratio": "|C₁/C₂|", "growing_mode_ratio": "|α₁/α₂|"}
    rng = np.random.default_rng(0)
    for row, (init, (table, summary)) in enumerate(families.items()):
        for ax, column in zip(axes[row], titles):
            if column == "imbalance_ratio" and not summary["imbalance_defined"]:
                ax.text(
                    0.5,
                    0.5,
                    f"C_k = 0 (|C| ≤ {summary['max_abs_imbalance']:.0e}):\nthe ratio is undefined",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
                ax.set(xticks=[], yticks=[])
                ax.set_title(f"{init} init: {titles[column]}", fontsize=8)
                continue
            for code, (label, colour) in _CLASS_STYLE.items():
                rows = table[table["target_set"] == code]
                if len(rows):
                    y = _ROW[code] + rng.uniform(-0.3, 0.3, len(rows))
                    ax.scatter(rows[column], y, s=4, color=colour, label=label)
            rule = summary[column]["best_rule"]
            for value in (rule["lower"], rule["upper"]):
                ax.axvline(value, color="k", lw=1)
            if init == "gaussian" and column == "imbalance_ratio":
                for value in paper:
                    ax.axvline(value, color="r", lw=1, ls="--")
            ax.set(
                xscale="log",
                yticks=list(_ROW.values()),
                yticklabels=[_CLASS_NAME[c] for c in _ROW],
                title=f"{init} init: {titles[column]}: {rule['misplaced']} of {rule['total']} "
                f"misplaced by the best boundaries {rule['lower']:.3g} / {rule['upper']:.3g}"
                + (
                    " (black); paper's, along |C₁/C₂|: 1.35 / 0.74 (red)"
                    if init == "gaussian" and column == "imbalance_ratio"
                    else ""
                ),
            )
            ax.title.set_fontsize(8)
        axes[row, 0].set_ylabel("set reached")
    for ax in axes[-1]:
        ax.set_xlabel("ratio at init")
    fig.tight_layout()
    return fig


def boundary_figure(datasets: dict, summary: dict):
    """Scans of α₁/α₂ from the pure growing mode: one row per condition, each run a
    dot coloured by the set it reached; the onset of the Q¹ basin (black) and √2."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(datasets) + 1.4))
    labels = list(datasets)
    for row, label in enumerate(labels):
        one = datasets[label].isel(n=0, scale=0)
        alpha = one["growing_mode"].values
        ratio = np.abs(alpha[:, 0] / alpha[:, 1])
        classes = one["target_set"].values
        for code, (name, colour) in _CLASS_STYLE.items():
            m = classes == code
            if m.any():
                ax.scatter(
                    ratio[m],
                    np.full(m.sum(), row),
                    s=9,
                    color=colour,
                    label=name
                    if row == 0 or not ax.get_legend_handles_labels()[1].count(name)
                    else None,
                )
        b = summary[label]["boundary"]
        if np.isfinite(b):
            ax.plot([b, b], [row - 0.4, row + 0.4], "k-", lw=1.5)
    ax.axvline(np.sqrt(2), color="r", ls="--", lw=1, label="√2")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper right")
    ax.set(
        xscale="log",
        yticks=range(len(labels)),
        yticklabels=labels,
        xlabel="α₁/α₂ at init (pure growing mode; swapping the neurons mirrors it below 1)",
        title="where the Q¹ basin begins (black tick), one change at a time",
    )
    ax.invert_yaxis()
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
    fig, (raw, left, right) = plt.subplots(1, 3, figsize=(16, 4.2))
    colours = _seed_colours([(c[2], c[3]) for c in curves])
    for t, loss, scale, seed in curves:
        label = f"ε = {scale:g} (seed {seed})"
        ok = t > 0
        raw.loglog(t[ok], loss[ok], color=colours[(scale, seed)], label=label)
        left.semilogy(
            t - slope * np.log(1 / scale), loss, color=colours[(scale, seed)], label=label
        )
    width = neurons["neuron"].nunique()
    raw.set(
        xlabel="t",
        ylabel="training loss",
        title=f"width {width}, σ(z) = z/(1+z²), labels tanh(s+1)",
    )
    raw.legend(fontsize=7)
    left.set(
        xlim=(-5, 40),
        xlabel="t − log(1/ε)/λ",
        ylabel="training loss",
        title="shifted by the linearised escape time",
    )
    for run, rows in neurons.groupby("run"):
        right.semilogy(rows["imbalance_ratio"], rows["output_rms"], ".", ms=2, label=run)
    right.set(
        xlabel="C_i/C_1 at init",
        ylabel="RMS of a_i σ(w_i·x) at the end",
        title="which neurons are active at the end of each run",
    )
    right.legend(fontsize=7, markerscale=4)
    fig.tight_layout()
    return fig


def thresholds_figure(table, summary: dict):
    """`table`: DataFrame(design, init, scale, n, probability); `summary`: the
    thresholds. One panel per data design; colour = ε (the same ε, the same colour in
    both panels), students started near Q¹ in grey/black."""
    plt = _pyplot()
    designs = list(dict.fromkeys(table["design"]))
    fig, axes = plt.subplots(1, len(designs), figsize=(6.5 * len(designs), 4.4), squeeze=False)
    random = table[table["init"] == "random"]
    scales = sorted(set(random["scale"]), reverse=True)
    colour = dict(zip(scales, plt.cm.viridis(np.linspace(0, 0.92, len(scales)))))
    near_styles = iter([("tab:brown", "s", "--"), ("tab:pink", "D", "--"), ("tab:olive", "^", ":")])
    near_style = {}
    for ax, design in zip(axes[0], designs):
        for (init, scale), rows in table[table["design"] == design].groupby(
            ["init", "scale"], sort=False
        ):
            if init == "random":
                ax.plot(
                    rows["n"],
                    rows["probability"],
                    "o-",
                    color=colour[scale],
                    label=f"ε = {scale:g}",
                )
            else:
                if scale not in near_style:
                    near_style[scale] = next(near_styles)
                c, m, ls = near_style[scale]
                ax.plot(
                    rows["n"],
                    rows["probability"],
                    marker=m,
                    ls=ls,
                    color=c,
                    label=f"near Q¹, δ = {scale:g}",
                )
        ax.axvline(
            summary["optimistic_sample_size_tangent_rank"],
            color="k",
            ls=":",
            label="optimistic (tangent rank)",
        )
        sep = summary["separation_sample_size"].get(design)
        if sep is not None and np.isfinite(sep):
            ax.axvline(sep, color="r", ls="-.", label="separation (rule)")
        ax.axhline(summary["positive_fraction"], color="r", lw=0.6, ls=":")
        ax.set(
            xlabel="sample size n",
            ylabel="fraction of runs recovered",
            ylim=(-0.05, 1.05),
            title=f"{design} inputs (red dotted: the {summary['positive_fraction']:g} rule)",
        )
        ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return fig
