"""Figures of the spectral-bias reproduction. Drawing only: every number shown comes
from the datasets of `run` and the fits of `reproduce`, passed in."""

import numpy as np


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def spectra_figure(ds):
    """The analogue of the paper's Figure 1: each activation $\\varphi$ (left) beside its
    $\\rho_\\varphi(k)$ (right, log scale; shaded where $\\rho = \\infty$, the stop band;
    dots: the numerical route where it exists)."""
    plt = _pyplot()
    names = list(ds.activation.values)
    fig, axes = plt.subplots(len(names), 2, figsize=(8, 1.7 * len(names)), squeeze=False)
    k = ds.k.values
    for row, name in enumerate(names):
        left, right = axes[row]
        left.plot(ds.z.values, ds["phi"].sel(activation=name).values, color="k")
        left.set_ylabel(name)
        rho = ds["rho"].sel(activation=name).values
        finite = np.isfinite(rho) & (rho > 0)
        right.semilogy(k[finite], rho[finite], color="tab:blue", label="closed form")
        numerical = ds["rho_numerical"].sel(activation=name).values
        shown = np.isfinite(numerical) & (numerical > 0)
        right.semilogy(k[shown][::8], numerical[shown][::8], ".", ms=3, color="tab:orange",
                       label="numerical")  # fmt: skip
        infinite = ~np.isfinite(rho)
        if infinite.any():
            right.fill_between(k, 0, 1, where=infinite, color="0.8",
                               transform=right.get_xaxis_transform(), label="ρ = ∞")  # fmt: skip
        if row == 0:
            right.legend(fontsize=7, loc="upper left")
    axes[0, 0].set_title("φ(z)")
    axes[0, 1].set_title(f"ρ_φ(k) = |k|^(d−1)/|φ̂(k)|², d = {int(ds.attrs['dim'])}")
    axes[-1, 0].set_xlabel("z")
    axes[-1, 1].set_xlabel("k")
    fig.tight_layout()
    return fig


def spline_figure(ds):
    """The frozen ReLU layer's kernel interpolant $f_\\infty$ through the data, with its
    second derivative (piecewise linear between the data: a cubic spline)."""
    plt = _pyplot()
    grid, f = ds.grid.values, ds["f_infinity"].values
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    top.plot(grid, f, color="tab:blue", label="kernel interpolant f_∞")
    top.plot(ds["x"].values, ds["y"].values, "ko", label="data")
    top.legend(fontsize=8)
    top.set_title(
        f"ReLU, ξ = ±1, γ ~ U[−{ds.attrs['radius']:g}, {ds.attrs['radius']:g}]: cubic fit "
        f"residual {ds.attrs['cubic_residual']:.1e} "
        f"(quadratic {ds.attrs['quadratic_residual']:.1e})",
        fontsize=9,
    )
    second = np.gradient(np.gradient(f, grid), grid)
    bottom.plot(grid[2:-2], second[2:-2], color="tab:red")
    for point in ds["x"].values:
        bottom.axvline(point, color="0.7", lw=0.6)
    bottom.set(xlabel="x", ylabel="f_∞″ (finite differences)")
    fig.tight_layout()
    return fig


def width_gap_figure(frozen, lazy, fits: dict):
    """Sup-norm gap to the kernel interpolant against the width, every seed a dot, the
    median a line, the fitted power law dashed: frozen ReLU layer (left), all parameters
    of an erf net in the lazy regime (right, with its two parts)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))

    def panel(ax, ds, name, label, color, fit=None):
        widths = np.asarray(ds.width.values, float)
        values = ds[name].values
        for i, m in enumerate(widths):
            ax.loglog(np.full(values.shape[1], m), values[i], ".", color=color, alpha=0.4, ms=4)
        ax.loglog(widths, np.nanmedian(values, 1), "o-", color=color, label=label)
        if fit is not None:
            ref = np.exp(np.nanmean(np.log(values)) - fit["slope"] * np.mean(np.log(widths)))
            ax.loglog(widths, ref * widths ** fit["slope"], "--", color=color, lw=0.8,
                      label=f"m^{fit['slope']:.2f} ± {fit['stderr']:.2f}")  # fmt: skip

    panel(left, frozen, "limit_gap", "flow limit pinv(Φ)y", "tab:blue", fits["frozen"])
    if np.isfinite(frozen["flow_gap"].values).any():
        panel(left, frozen.dropna("width", how="all", subset=["flow_gap"]), "flow_gap",
              "flow", "tab:green")  # fmt: skip
    left.set(xlabel="width m", ylabel="max |f_m − f_∞| on the grid",
             title="frozen ReLU hidden layer, a from 0")  # fmt: skip
    left.legend(fontsize=8)
    panel(right, lazy, "gap", "flow vs NTK interpolant", "tab:blue", fits["lazy"])
    panel(right, lazy, "linear_gap", "linearised limit vs NTK", "tab:orange", fits["lazy_linear"])
    panel(right, lazy, "nonlinear_gap", "flow vs linearised", "tab:red", fits["lazy_nonlinear"])
    right.set(xlabel="width m", title="lazy regime: all of (a, W, b), erf, centred init")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ntk_figure(lazy):
    """The NTK interpolant and the trained nets of seed 0 at each width."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    grid = lazy.grid.values
    for width in lazy.width.values:
        f = lazy["f_flow_seed0"].sel(width=width).values
        ax.plot(grid, f, lw=0.8, label=f"flow, m = {int(width)}")
    ax.plot(grid, lazy["f_ntk"].values, "k--", label="NTK interpolant")
    ax.plot(lazy["x"].values, lazy["y"].values, "ko")
    ax.set(xlabel="x", title="lazy regime (erf, all parameters trained), seed 0")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def design_figure(ds):
    """Each designed activation: $\\varphi$ (left); target and measured $\\rho$ with their
    relative difference (middle); the kernel interpolant and a width-m random-features
    net through the data (right)."""
    plt = _pyplot()
    designs = list(ds.design.values)
    fig, axes = plt.subplots(len(designs), 3, figsize=(13, 3.4 * len(designs)), squeeze=False)
    k = ds.k.values
    for row, name in enumerate(designs):
        one = ds.sel(design=name)
        a, b, c = axes[row]
        a.plot(ds.z.values, one["phi"].values, color="k")
        a.set(title=f"designed φ ({name})", xlabel="z")
        target = one["rho_target"].values
        finite = np.isfinite(target)
        b.semilogy(k[finite], target[finite], color="tab:blue", label="target ρ")
        b.semilogy(k[::6], one["rho_measured"].values[::6], ".", color="tab:orange", ms=4,
                   label="measured (numerical route)")  # fmt: skip
        if (~finite).any():
            b.fill_between(k, 0, 1, where=~finite, color="0.8",
                           transform=b.get_xaxis_transform(), label="ρ = ∞")  # fmt: skip
        b.set(
            xlabel="k", title=f"max relative difference {float(one['max_relative_difference']):.1e}"
        )
        b.legend(fontsize=7)
        twin = b.twinx()
        twin.semilogy(k, one["relative_difference"].values, color="0.5", lw=0.6)
        twin.set_ylabel("relative difference", fontsize=7)
        grid = ds.grid.values
        c.plot(grid, one["f_kernel"].values, color="tab:blue", label="kernel interpolant")
        c.plot(grid, one["f_network"].values, color="tab:orange", lw=0.7,
               label=f"net, m = {int(ds.attrs['design_width'])}")  # fmt: skip
        c.plot(ds["x"].values, ds["y"].values, "ko")
        c.set(xlabel="x", title=f"in-band energy {float(one['band_fraction']):.5f}; "
              f"relative sup gap on the data {float(one['network_gap']):.2f}")  # fmt: skip
        c.legend(fontsize=7)
    fig.tight_layout()
    return fig
