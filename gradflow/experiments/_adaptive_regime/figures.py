"""Figures of the adaptive-regime reproduction. Drawing only: every number shown comes from
the datasets of `run`, passed in."""

import numpy as np


KIND_COLOURS = ("tab:blue", "tab:red", "0.6")  # valley, ridge, crease
KIND_NAMES = ("valley", "ridge", "crease")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _snapshot_times(ds, seed, num=4):
    ts = ds.time.values
    t_stop = float(ds["t_stop"].values[seed])
    inside = ts[(ts > 0) & (ts <= t_stop)]
    picks = np.geomspace(max(inside[0], 1e-2), t_stop, num)
    return [int(np.argmin(np.abs(ts - t))) for t in picks]


def _lines_2d(ax, xi, gamma, amplitude, x, centre, radius):
    """Breaklines ξ·x = γ across the data ball, coloured by the sign of the amplitude,
    width by its size; the data points in black."""
    size = np.abs(amplitude)
    top = size.max() if size.size and size.max() > 0 else 1.0
    t = np.linspace(-1.6 * radius, 1.6 * radius, 2)
    for k in range(len(gamma)):
        if not np.all(np.isfinite(xi[k])) or not np.any(xi[k]):
            continue
        foot = gamma[k] * xi[k]
        along = np.array([-xi[k, 1], xi[k, 0]])
        p = foot[None, :] + t[:, None] * along[None, :]
        ax.plot(p[:, 0], p[:, 1], color="tab:red" if amplitude[k] > 0 else "tab:blue",
                lw=0.4 + 2.0 * size[k] / top, alpha=0.3 + 0.7 * size[k] / top)  # fmt: skip
    ax.plot(x[:, 0], x[:, 1], "ko", ms=5)
    ax.set_xlim(centre[0] - 1.6 * radius, centre[0] + 1.6 * radius)
    ax.set_ylim(centre[1] - 1.6 * radius, centre[1] + 1.6 * radius)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def example_figure(ds, seed: int | None = None):
    """One seed's breakplanes through training (default: the first seed that fitted the
    data) and the ensemble's clusters and pins.

    2-D: top row, the breaklines at four times (red: amplitude > 0, blue: < 0; width ∝
    |amplitude|); 1-D: the breakpoints $\\gamma_k \\xi_k$ against time with the data points
    as horizontal lines. Bottom: clusters (≥ 2 breakplanes within the tolerance) and pins
    held for this seed, and the ensemble's median and quartiles."""
    plt = _pyplot()
    if seed is None:
        fitted = np.flatnonzero(ds["stop_reason"].values == 1)
        seed = int(fitted[0]) if len(fitted) else 0
    x = np.asarray(ds.attrs["x"]).reshape(-1, int(ds.attrs["dim_x"]))
    centre, radius = np.asarray(ds.attrs["centre"]), float(ds.attrs["radius"])
    ts = ds.time.values
    xi = ds["orientation"].values[seed]
    gamma = ds["offset"].values[seed]
    amp = ds["amplitude"].values[seed]
    kinked = bool(ds.attrs["kinked"])
    fig = plt.figure(figsize=(12, 6.5))
    if x.shape[1] == 2:
        picks = _snapshot_times(ds, seed)
        for j, t in enumerate(picks):
            ax = fig.add_subplot(2, len(picks), j + 1)
            _lines_2d(ax, xi[t], gamma[t], amp[t], x, centre, radius)
            ax.set_title(f"t = {ts[t]:.3g}, loss {ds['loss'].values[seed, t]:.2e}", fontsize=8)
        bottom = [fig.add_subplot(2, 3, 4 + j) for j in range(3)]
        angle = np.arctan2(xi[..., 1], xi[..., 0])
        for k in range(angle.shape[1]):
            bottom[0].semilogx(ts[1:], angle[1:, k], lw=0.8)
        bottom[0].set_ylabel("breakplane angle φ_k")
    else:
        ax = fig.add_subplot(2, 1, 1)
        point = (gamma * xi[..., 0])[1:]
        for k in range(point.shape[1]):
            ax.semilogx(ts[1:], point[:, k], color="tab:red" if amp[-1, k] > 0 else "tab:blue",
                        lw=0.5 + 2 * abs(amp[-1, k]) / np.max(np.abs(amp[-1])))  # fmt: skip
        for xj in x[:, 0]:
            ax.axhline(xj, color="k", lw=0.6, ls=":")
        ax.set_ylim(centre[0] - 2 * radius, centre[0] + 2 * radius)
        ax.set_ylabel("breakpoint γ_k ξ_k")
        ax.set_title(f"seed {seed}: breakpoints (red: amplitude > 0 at the end); dotted: data")
        bottom = [fig.add_subplot(2, 3, 4 + j) for j in range(3)]
        bottom[0].semilogx(ts[1:], ds["loss"].values[seed, 1:], color="k")
        bottom[0].set_yscale("log")
        bottom[0].set_ylabel("loss")
    for ax, name, label in (
        (bottom[1], "num_clusters", f"clusters (≥ 2 within {ds.attrs['cluster_tol']:g} R)"),
        (bottom[2], "pins_held" if kinked else "largest_cluster",
         "pins held (event log)" if kinked else "largest cluster"),
    ):  # fmt: skip
        values = ds[name].values
        q = np.quantile(values, [0.25, 0.5, 0.75], axis=0)
        ax.fill_between(ts[1:], q[0, 1:], q[2, 1:], color="0.85", label="seeds: quartiles")
        ax.semilogx(ts[1:], q[1, 1:], color="k", label="seeds: median")
        ax.semilogx(ts[1:], values[seed, 1:], color="tab:orange", label=f"seed {seed}")
        ax.set_ylabel(label)
        ax.set_xlabel("t")
    bottom[2].legend(fontsize=7)
    fig.suptitle(
        f"{ds.attrs['activation']}, width {ds.sizes['neuron']}, ε = {ds.attrs['scale']:g}, "
        f"{ds.sizes['seed']} seeds"
    )
    fig.subplots_adjust(wspace=0.35, hspace=0.3, left=0.07, right=0.97)
    return fig


def statistics_figure(ds):
    """End-of-training histograms over the seeds: clusters and the largest cluster
    (grown neurons, the headline tolerance), pinned neurons and points per pinned neuron
    (event log), cluster formation times."""
    plt = _pyplot()
    tol = float(ds.attrs["cluster_tol"])
    kinked = bool(ds.attrs["kinked"])
    panels = [
        ("end_clusters_grown", "clusters of grown neurons"),
        ("end_largest_grown", "largest cluster (grown)"),
        ("formation_time", "formation time of the largest cluster"),
    ]
    if kinked:
        panels += [("pinned_neurons_end", "pinned neurons at the end"),
                   ("max_points_end", "most points held by one neuron"),
                   ("median_pin_duration", "median pin duration")]  # fmt: skip
    fig, axes = plt.subplots(2, 3, figsize=(11, 6))
    for ax, (name, label) in zip(axes.ravel(), panels):
        values = ds[name]
        if "tol" in values.dims:
            values = values.sel(tol=tol)
        values = values.values
        values = values[np.isfinite(values)]
        if name in ("formation_time", "median_pin_duration"):
            if values.size:
                ax.hist(values, bins=20, color="tab:blue")
        elif values.size:
            edges = np.arange(values.min(), values.max() + 2) - 0.5
            ax.hist(values, bins=edges, color="tab:blue")
        ax.set_title(f"{label} (median {np.median(values) if values.size else np.nan:.3g})",
                     fontsize=9)  # fmt: skip
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"{ds.attrs['activation']}, width {ds.sizes['neuron']}, ε = {ds.attrs['scale']:g}: "
        f"{ds.sizes['seed']} seeds, cluster tolerance {tol:g} R"
    )
    fig.tight_layout()
    return fig


SWEEP_PANELS = (
    ("largest_fraction", "largest cluster / width (grown)"),
    ("end_clusters_grown", "clusters of ≥ 2 (grown)"),
    ("near_pinned_fraction", "grown neurons through a data point"),
    ("grown_fraction", "grown neurons / width"),
    ("fitted", "fraction of seeds fitted"),
)


def sweep_figure(sw):
    """Clusters and pins at the end against the init scale, one column per width, one
    line per activation (median over seeds, quartiles shaded; `fitted`: fraction)."""
    plt = _pyplot()
    tol = float(sw.attrs["cluster_tol"])
    widths = list(sw.width.values)
    fig, axes = plt.subplots(len(SWEEP_PANELS), len(widths), figsize=(3.6 * len(widths), 11),
                             squeeze=False, sharex=True)  # fmt: skip
    scales = sw.scale.values
    for col, m in enumerate(widths):
        for row, (name, label) in enumerate(SWEEP_PANELS):
            ax = axes[row, col]
            for activation in sw.activation.values:
                part = sw.sel(activation=activation, width=m)
                if name == "largest_fraction":
                    v = part["end_largest_grown"].sel(tol=tol).values / m
                elif name == "fitted":
                    v = (part["stop_reason"].values == 1).astype(float)
                    ax.semilogx(scales, v.mean(axis=-1), "o-", label=str(activation))
                    continue
                else:
                    v = part[name]
                    v = (v.sel(tol=tol) if "tol" in v.dims else v).values
                q = np.nanquantile(v, [0.25, 0.5, 0.75], axis=-1)
                line = ax.semilogx(scales, q[1], "o-", label=str(activation))[0]
                ax.fill_between(scales, q[0], q[2], color=line.get_color(), alpha=0.15)
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
            if row == 0:
                ax.set_title(f"width {m}")
            if row == len(SWEEP_PANELS) - 1:
                ax.set_xlabel("init scale ε")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(
        f"3-point 2-D example, {sw.sizes['seed']} seeds per point, cluster tolerance {tol:g} R"
    )
    fig.tight_layout()
    return fig


def gd_figure(gd):
    """Gradient descent against the exact flow's pins: the distance of the pinned data
    point from the GD breakplane, in units of η·R (median, 90th percentile, max over the
    middle of each pin's interval), per pin and step size; the unpinned control."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    pins = gd.pin.values
    for r, eta in enumerate(gd.rate.values):
        offset = 0.1 * (r - (gd.sizes["rate"] - 1) / 2)
        axes[0].errorbar(
            pins + offset, gd["distance_over_rate_median"].values[r],
            yerr=[np.zeros(len(pins)), gd["distance_over_rate_p90"].values[r]
                  - gd["distance_over_rate_median"].values[r]],
            fmt="o", capsize=2, label=f"η = {eta:g}",
        )  # fmt: skip
        axes[0].plot(pins + offset, gd["distance_over_rate_max"].values[r], "x", color="0.4")
        axes[1].semilogy(pins + offset, gd["unpinned_median"].values[r], "s",
                         label=f"η = {eta:g}")  # fmt: skip
    axes[0].set_xlabel("pin (event log order)")
    axes[0].set_ylabel("distance / (η R): median, to p90; ×: max")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("pin")
    axes[1].set_ylabel("unpinned points of that neuron: median distance / R")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"GD iterates vs the exact flow's pins (seed {gd.attrs['seed']})")
    fig.tight_layout()
    return fig


def slice_figure(sl):
    """The loss about a pinned neuron on the plane (rotation about the pinned point,
    step across its surface) of `run.slice_loss` (ΔL, every other weight held), each
    data point's curve coloured by its kink (valley, ridge, crease), the configuration
    as a star; the 1-D slices across the pinned surface and along it (rotation about the
    point)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw=dict(width_ratios=[1.6, 1, 1]))
    ax = axes[0]
    delta = sl["delta_loss"].values
    scale = np.max(np.abs(delta)) or 1.0
    angles, across = sl.angle.values - sl.attrs["angle"], sl.across.values
    image = ax.pcolormesh(angles, across, delta / scale, cmap="viridis", shading="auto")
    fig.colorbar(image, ax=ax, label=f"ΔL / {scale:.2e}")
    for j in sl.point.values:
        curve = sl["curve"].values[j]
        kinds = sl["kind"].values[j]
        for code, colour in enumerate(KIND_COLOURS):
            show = (kinds == code) & (curve >= across[0]) & (curve <= across[-1])
            ax.plot(angles[show], curve[show], ".", ms=2.5, color=colour,
                    label=KIND_NAMES[code] if j == sl.attrs["pinned_point"] else None)  # fmt: skip
    ax.plot([0], [0], "*", ms=12, color="w", mec="k")
    ax.set_xlabel("rotation about the pinned point φ − φ_k")
    ax.set_ylabel("step across the pin u (units of ‖(w_k, b_k)‖)")
    ax.legend(fontsize=7, loc="upper right", markerscale=3)
    ax.set_title(
        f"seed {sl.attrs['seed']}, neuron {sl.attrs['neuron']} pinned at point "
        f"{sl.attrs['pinned_point']}, t = {sl.attrs['time']:.3g}, loss {sl.attrs['loss']:.3g}",
        fontsize=9,
    )
    axes[1].plot(sl.line.values, sl["across_line"].values, color="k")
    axes[1].axvline(0, color="tab:blue", lw=0.6)
    axes[1].set_xlabel("u (across the pinned point's surface)")
    axes[1].set_ylabel("ΔL")
    axes[1].set_title(f"kink here: {sl.attrs['kind_here']}", fontsize=9)
    axes[2].plot(sl.along_angle.values - sl.attrs["angle"], sl["along"].values, color="k")
    axes[2].axvline(0, color="tab:blue", lw=0.6)
    axes[2].set_xlabel("rotation about the pinned point (u = 0)")
    axes[2].set_ylabel("ΔL")
    fig.tight_layout()
    return fig
