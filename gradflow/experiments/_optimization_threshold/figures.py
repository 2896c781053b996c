"""Figures of the optimization-threshold reproduction. Drawing only: every number shown
comes from the datasets of `run` and the thresholds and fits of `reproduce`, passed in."""

import numpy as np


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _quartiles(v):
    return np.nanquantile(v, [0.25, 0.5, 0.75], axis=-1)


def loss_figure(datasets: dict, dim: int, sigma2: float):
    """The analogue of the paper's Fig. 1: median training and population (test) MSE
    against $n$ (quartiles shaded) for each width, with the least-squares fit's, $\\sigma^2$
    marked; right: the fraction of runs that interpolate."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    floor = 1e-6 * sigma2  # interpolating runs reach 1e-20 and below: drawn at the floor
    for i, (width, ds) in enumerate(sorted(datasets.items())):
        n = ds.n.values
        for name, style in (("train_mse", "-o"), ("test_mse", "--s")):
            lo, mid, hi = np.maximum(_quartiles(ds[name].values), floor)
            left.plot(
                n, mid, style, color=colors[i], ms=4, label=f"{name.split('_')[0]}, m = {width}"
            )
            left.fill_between(n, lo, hi, color=colors[i], alpha=0.15)
        right.plot(
            n,
            np.nanmean(ds["interpolating"].values, axis=1),
            "-o",
            color=colors[i],
            label=f"m = {width}",
        )
    ds = next(iter(datasets.values()))
    n = ds.n.values
    left.plot(
        n,
        np.maximum(np.nanmedian(ds["ols_train_mse"].values, axis=1), floor),
        ":",
        color="k",
        label="OLS train",
    )
    left.plot(
        n,
        np.maximum(np.nanmedian(ds["ols_test_mse"].values, axis=1), floor),
        "-.",
        color="k",
        label="OLS test",
    )
    left.axhline(sigma2, color="0.5", lw=1)
    left.text(n[0], sigma2 * 1.05, "σ²", color="0.4")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_ylim(floor / 3, None)
    left.axhline(floor, color="0.85", lw=0.8)
    left.text(n[-1], floor * 1.5, "below: drawn at 1e-6 σ²", color="0.5", fontsize=7, ha="right")
    left.set_xlabel("n")
    left.set_ylabel("MSE (median, quartiles)")
    left.set_title(f"d = {dim}: training and population MSE of the flow's end point", fontsize=9)
    left.legend(fontsize=7)
    right.set_xscale("log")
    right.set_ylim(-0.05, 1.05)
    right.set_xlabel("n")
    right.set_ylabel("fraction of runs interpolating")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def threshold_figure(datasets: dict, thresholds: dict):
    """Fraction of interpolating runs against $n/d$, one curve per $d$, $n^*$ marked
    with its bootstrap interval."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (dim, ds) in enumerate(sorted(datasets.items())):
        color = colors[i % len(colors)]
        th = thresholds[dim]
        ax.plot(ds.n.values / dim, th["fraction"], "-o", ms=3, color=color, label=f"d = {dim}")
        if np.isfinite(th["n_star"]):
            ax.errorbar(
                th["n_star"] / dim,
                0.5,
                xerr=[
                    [max(th["n_star"] - th["low"], 0) / dim],
                    [max(th["high"] - th["n_star"], 0) / dim],
                ],
                fmt="x",
                color=color,
                capsize=3,
            )
    ax.axhline(0.5, color="0.7", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("n / d")
    ax.set_ylabel("fraction of converged runs interpolating")
    ax.set_title("n* (×, bootstrap 95 %): where the fraction falls to 1/2", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def threshold_growth_figure(dims, n_star, low, high, fit: dict, censored=None):
    """$n^*$ against $d$ (log-log) with the fitted power law, beside $d^3$ (the theory's
    sufficient growth, drawn through the first point: only its slope means anything).
    Dimensions whose $n^*$ the size grid does not bracket (`censored`) are drawn open
    and left out of the fit."""
    plt = _pyplot()
    dims = np.asarray(dims, float)
    n_star, low, high = (np.asarray(v, float) for v in (n_star, low, high))
    censored = np.asarray(censored if censored is not None else [""] * len(dims), bool)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ok = np.isfinite(n_star) & ~censored
    ax.errorbar(dims[ok], n_star[ok], yerr=[n_star[ok] - low[ok], high[ok] - n_star[ok]],
                fmt="o", capsize=3, label="n* (bootstrap 95 %)")  # fmt: skip
    out = np.isfinite(n_star) & censored
    if out.any():
        ax.plot(dims[out], n_star[out], "o", mfc="none", color="tab:blue",
                label="n* ≤ smallest size (not fitted)")  # fmt: skip
    grid = np.linspace(dims.min(), dims.max(), 50)
    if np.isfinite(fit.get("exponent", np.nan)):
        band = ""
        if "exponent_stderr" in fit:
            band = f" ± {fit['exponent_stderr']:.2f}"
        ax.plot(
            grid,
            fit["prefactor"] * grid ** fit["exponent"],
            "-",
            label=f"fit {fit['prefactor']:.2g}·d^{fit['exponent']:.2f}{band}",
        )
    if ok.any():
        first = np.flatnonzero(ok)[0]
        ax.plot(
            grid,
            n_star[first] * (grid / dims[first]) ** 3,
            ":",
            color="k",
            label="∝ d³ (theory's sufficient n)",
        )
        ax.plot(grid, n_star[first] * (grid / dims[first]), "--", color="0.6", label="∝ d")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d")
    ax.set_ylabel("n*")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def directions_figure(ds, picks):
    """Neuron directions over time in $d = 2$: the angle of each $w_j(t)$ (colour: sign
    of $a_j$; opacity: its share of $|a_j|\\|w_j\\|$ at the end), the extremal directions
    $D_\\pm$ of $G_n$ and the OLS direction marked, for each `(n, seed)` of `picks`."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(picks), figsize=(5.2 * len(picks), 4), squeeze=False)
    t = ds.time.values
    for ax, (n, seed) in zip(axes[0], picks):
        run = ds.sel(n=n, seed=seed)
        W, a = run["W_t"].values, run["a_t"].values  # (T, m, 2), (T, m)
        angle = np.degrees(np.arctan2(W[..., 1], W[..., 0]))
        # Break the line where the angle wraps around ±180°.
        wrap = np.abs(np.diff(angle, axis=0)) > 180
        angle[1:][wrap] = np.nan
        # The end state (saved values after a run's stop time are NaN).
        weight = np.abs(run["a_end"].values) * np.linalg.norm(run["W_end"].values, axis=-1)
        alpha = 0.15 + 0.85 * weight / max(weight.max(), 1e-300)
        for j in range(W.shape[1]):
            ax.plot(
                t[1:],
                angle[1:, j],
                color="tab:red" if a[0, j] > 0 else "tab:blue",
                alpha=float(alpha[j]),
                lw=1,
            )
        D = run["extremal_directions"].values
        for k, (label, style) in enumerate((("D+", "-"), ("D−", "--"))):
            ax.axhline(
                np.degrees(np.arctan2(D[k, 1], D[k, 0])),
                color="k",
                ls=style,
                lw=0.8,
                label=f"{label} of G_n",
            )
        if np.isfinite(run["alignment_time"].values):
            ax.axvline(
                float(run["alignment_time"].values), color="0.6", lw=0.8, label="end of alignment"
            )
        ax.set_xscale("log")
        ax.set_ylim(-180, 180)
        ax.set_xlabel("t")
        ax.set_ylabel("angle of w_j (degrees)")
        interp = "interpolates" if run["interpolating"].values > 0 else "does not interpolate"
        ax.set_title(
            f"d = 2, n = {n}, seed {seed}: {interp}, {int(run['clusters'].values)} clusters "
            f"(red a > 0, blue a < 0)",
            fontsize=8,
        )
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def alignment_figure(datasets: dict):
    """Per $d$ against $n/d$: median cosine of the moved neurons with the extremal
    direction of their sign at the end of the alignment phase, and the number of
    clusters at the end (medians over seeds)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for dim, ds in sorted(datasets.items()):
        x = ds.n.values / dim
        line = left.plot(
            x,
            np.nanmedian(ds["alignment_cos_extremal"].values, axis=1),
            "-o",
            ms=3,
            label=f"d = {dim}, with D±",
        )
        left.plot(
            x,
            np.nanmedian(ds["alignment_cos_ols"].values, axis=1),
            ":",
            color=line[0].get_color(),
            label=f"d = {dim}, with ±β̂_OLS",
        )
        right.plot(x, np.nanmedian(ds["clusters"].values, axis=1), "-o", ms=3, label=f"d = {dim}")
    left.set_xscale("log")
    left.set_xlabel("n / d")
    left.set_ylabel("median cosine at the end of alignment")
    left.legend(fontsize=6, ncol=2)
    right.set_xscale("log")
    right.set_xlabel("n / d")
    right.set_ylabel("neuron clusters at the end (median)")
    right.axhline(2, color="0.7", lw=0.8)
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def methods_figure(ds):
    """The exact flow next to gradient descent, Adam and the GELU flow: median training
    and test MSE against $n$, and each end point's $L^2(P_x)$ distance to the flow's."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    n = ds.n.values
    for method in ds.algorithm.values:
        sel = ds.sel(algorithm=method)
        for ax, name in zip(axes, ("train_mse", "test_mse", "distance_to_flow")):
            ax.plot(n, np.nanmedian(sel[name].values, axis=1), "-o", ms=4, label=str(method))
    for ax, name in zip(axes, ("training MSE", "population MSE", "‖f − f_flow‖ in L²(P_x)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n")
        ax.set_ylabel(f"{name} (median over seeds)")
        ax.legend(fontsize=7)
    for ax in axes[:2]:
        ax.axhline(ds.attrs["sigma2"], color="0.6", lw=0.8)
    fig.tight_layout()
    return fig
