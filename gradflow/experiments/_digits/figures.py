"""Figures of the digits experiment. Drawing only: every number shown comes from the
datasets of `run`, passed in."""

import numpy as np


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


_COLOURS = {
    "relu": "tab:blue",
    "tanh": "tab:orange",
    "gaussian": "tab:green",
    "sinc": "tab:red",
    "sinc2": "tab:purple",
    "designed": "tab:brown",
}


def _colour(name):
    return _COLOURS.get(name, "0.3")


def accuracy_figure(kernel, adaptive):
    """Test accuracy per activation: each seed a dot, the mean ± standard deviation a bar;
    kernel regime at the training loss `loss_tol` and near its limit, adaptive regime
    at `loss_tol`."""
    plt = _pyplot()
    names = list(kernel.activation.values)
    columns = [
        ("kernel, at loss_tol", kernel["test_accuracy"].values),
        (
            "kernel, limit",
            kernel["test_accuracy_limit"].sel(scale=kernel.attrs["frequency_scale"]).values,
        ),
        ("adaptive, at loss_tol", adaptive["test_accuracy"].values),
    ]
    fig, ax = plt.subplots(figsize=(9, 4))
    offsets = np.linspace(-0.25, 0.25, len(columns))
    markers = ("o", "s", "^")
    for (label, values), offset, marker in zip(columns, offsets, markers):
        x = np.arange(len(names)) + offset
        for i in range(len(names)):
            ax.plot(np.full(values.shape[1], x[i]), values[i], marker, ms=3, alpha=0.4,
                    color=_colour(names[i]))  # fmt: skip
        ax.errorbar(x, values.mean(1), values.std(1, ddof=1), fmt=marker, color="k", ms=5,
                    capsize=3, label=label, mfc="none")  # fmt: skip
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("test accuracy")
    ax.set_title(
        f"8×8 digits, 10 classes, {kernel.attrs['train_images']} training images; "
        f"kernel m = {kernel.attrs['width']}, adaptive m = {adaptive.attrs['width']}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def scales_figure(kernel):
    """Kernel regime: test accuracy against the frequency scale σ of the frozen layer."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    scales = np.asarray(kernel.scale.values, float)
    for name in kernel.activation.values:
        for variable, style in (("test_accuracy_at_tol", "o-"), ("test_accuracy_limit", "s--")):
            values = kernel[variable].sel(activation=name).values
            ax.errorbar(scales, values.mean(1), values.std(1, ddof=1), fmt=style, ms=4,
                        capsize=2, color=_colour(name), lw=1,
                        label=name if variable == "test_accuracy_at_tol" else None)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks(scales, [f"{s:g}" for s in scales])
    ax.minorticks_off()
    ax.set(xlabel="frequency scale σ (w = σz, b = σζ)", ylabel="test accuracy",
           title="kernel regime: at loss_tol (solid), limit (dashed)")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def filtered_figure(kernel, adaptive, energy):
    """Test accuracy on DCT low-pass (left) and high-pass (right) test images against the
    band cut-off, per activation (mean over seeds; shaded: ± one standard deviation);
    top: kernel regime, bottom: adaptive; grey bars: the test images' DCT energy per
    band."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True, sharey=True)
    bands = kernel.band.values
    for row, ds in enumerate((kernel, adaptive)):
        for col, variable in enumerate(("lowpass_accuracy", "highpass_accuracy")):
            ax = axes[row, col]
            twin = ax.twinx()
            twin.bar(bands, energy / energy.sum(), color="0.85", width=0.8)
            twin.set_ylim(0, 1)
            twin.set_yticks([])
            ax.set_zorder(twin.get_zorder() + 1)
            ax.patch.set_visible(False)
            for name in ds.activation.values:
                values = ds[variable].sel(activation=name).values
                mean, std = values.mean(0), values.std(0, ddof=1)
                ax.plot(bands, mean, "o-", ms=3, color=_colour(name), label=name)
                ax.fill_between(bands, mean - std, mean + std, color=_colour(name), alpha=0.15)
            ax.axhline(0.1, color="0.5", lw=0.6, ls=":")
            kept = "u + v ≤ c" if variable == "lowpass_accuracy" else "u + v > c"
            ax.set_title(f"{ds.attrs['regime']} regime: {kept} kept", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("DCT band cut-off c")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def spectra_figure(kernel, adaptive):
    """The learned function's power spectrum along random lines through the test inputs
    (mean over seeds), per activation; kernel regime (left), adaptive (right)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, ds in zip(axes, (kernel, adaptive)):
        k = ds.k.values
        for name in ds.activation.values:
            power = ds["spectrum"].sel(activation=name).values.mean(0)
            shown = (k > 0) & (power > 0)
            ax.loglog(k[shown], power[shown], color=_colour(name), lw=1, label=name)
        for cutoff in ds.cutoff.values:
            ax.axvline(cutoff, color="0.7", lw=0.6, ls=":")
        ax.set(xlabel="k (radians per unit input distance)",
               title=f"{ds.attrs['regime']} regime: spectrum of f along lines")  # fmt: skip
    axes[0].set_ylabel("share of power")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
