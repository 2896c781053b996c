"""The embedded default job of `gradflow demo`: a seed ensemble of a single-neuron target,
run to its limit."""

import dataclasses
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._ensemble import flow_ensemble
from ._init import random_net
from ._labels import to_dataset
from ._network import imbalance
from ._times import log_times
from .experiments._single_neuron.measures import (
    end_point_class,
    growing_mode,
    misplaced_runs,
    neuron_outputs,
)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Workload W1 at a smaller init scale: two tanh neurons learn $\\tanh(x + 1)$ from
    6 points on $[-2, 2]$ (input $(x, 1)$), ½·sum loss, as in Zhao, Bai & Zhang.

    Each run goes to its limit: it stops once $\\|\\nabla L\\| \\le$ `stationarity_tol`
    $\\cdot\\|\\theta\\|$ (or the loss is below `loss_tol`, or at `t1`). The default solver
    (`TwoPhase`) crosses the stiff late phase in a few hundred implicit steps."""

    num_seeds: int = 1000
    scale: float = 1e-12
    width: int = 2
    num_points: int = 6
    t1: float = 1e10
    stationarity_tol: float = 1e-10
    loss_tol: float = 1e-20
    seed: int = 0
    chunk_size: int = 500

    def data(self):
        s = jnp.linspace(-2.0, 2.0, self.num_points)
        return jnp.stack([s, jnp.ones_like(s)], axis=1), jnp.tanh(s + 1.0)


def _test_set(num: int = 401):
    s = jnp.linspace(-2.0, 2.0, num)
    x = jnp.stack([s, jnp.ones_like(s)], axis=1)
    return x, jnp.tanh(s + 1.0), jnp.full(num, 1.0 / num)


def population_error(nets, num: int = 401):
    """Mean squared error against the target on a dense grid of $[-2, 2]$."""
    x, target, _ = _test_set(num)
    return jax.vmap(lambda net: jnp.mean((net(x) - target) ** 2))(nets)


@eqx.filter_jit
def _end_points(nets, initial, x, y):
    """Per seed: the set reached (`end_point_class`: k for $Q^k$, -1 shared, 0 none),
    the share of the target's output carried by neuron 1, $\\rho_1/(\\rho_1 + \\rho_2)$
    with $\\rho_k$ the RMS of $a_k\\sigma(w_k\\cdot x)$ on the test grid, and the initial
    amplitudes $\\alpha_k$ on the unstable mode (one compiled call: eager, these small
    operations took 7 s on a loaded 2-core machine)."""
    x_test, y_test, w_test = _test_set()

    def one(net, net0):
        code, _ = end_point_class(
            net, x_test, y_test, w_test, recovery_threshold=1e-8, carry_tolerance=1e-2
        )
        rms = jnp.sqrt(w_test @ neuron_outputs(net, x_test) ** 2)
        return code, rms[0] / jnp.sum(rms), growing_mode(net0, x, y)

    return jax.vmap(one)(nets, initial)


def run_demo(config: DemoConfig = DemoConfig(), out_dir="gradflow-demo", progress=True):
    """Runs the ensemble, writes `results.npz`, `summary.txt` and `demo.png` into
    `out_dir`, and returns the summary text."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x, y = config.data()
    keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    nets = jax.vmap(
        lambda k: random_net(k, width=config.width, dim=2, scale=config.scale, activation="tanh")
    )(keys)
    ts = log_times(config.t1, 60, t_min=1e-2)
    start = time.perf_counter()
    sol = flow_ensemble(
        nets,
        x,
        y,
        t1=config.t1,
        ts=ts,
        reduction="sum",
        stationarity_tol=config.stationarity_tol,
        loss_tol=config.loss_tol,
        chunk_size=config.chunk_size,
        progress=progress,
    )
    wall = time.perf_counter() - start

    ds = to_dataset(sol)
    ds["test_error"] = ("seed", np.asarray(population_error(sol.net)))
    c0 = np.asarray(imbalance(nets))
    ds["imbalance_ratio"] = ("seed", c0[:, 0] / c0[:, 1])
    # The amplitudes on the unstable mode at the origin decide the limit (see
    # `figures/single_neuron/README.md`); C₁/C₂ does not.
    code, share, alpha = (np.asarray(v) for v in _end_points(sol.net, nets, x, y))
    ds["growing_mode_ratio"] = ("seed", alpha[:, 0] / alpha[:, 1])
    ds["target_set"] = ("seed", code)
    ds["share_of_neuron_1"] = ("seed", share)
    np.savez(
        out / "results.npz",
        **{name: ds[name].values for name in ds.data_vars},
        time=ds["time"].values,
    )
    err = ds["test_error"].values
    ok = ds["status"].values == 0
    counts = {name: int(np.sum(code[ok] == k)) for k, name in _CLASS_NAMES.items()}
    by_alpha = misplaced_runs(np.abs(ds["growing_mode_ratio"].values[ok]), code[ok])
    by_c = misplaced_runs(np.abs(ds["imbalance_ratio"].values[ok]), code[ok])
    t_stop = ds["t_stop"].values[ok]
    summary = "\n".join(
        [
            f"gradflow demo: {config.num_seeds} seeds, init scale {config.scale:g}, "
            f"width {config.width}, tanh, target tanh(x+1) from {config.num_points} points",
            f"wall time {wall:.1f} s (compilation included), {config.num_seeds / wall:.0f} seeds/s",
            sol.summary(),
            f"  stopped at t = {np.min(t_stop):.3g} … {np.max(t_stop):.3g} (median "
            f"{np.median(t_stop):.3g}); final loss ≤ {np.max(ds['final_loss'].values[ok]):.1e}; "
            f"test error: median {np.median(err[ok]):.2e}, largest {np.max(err[ok]):.2e}",
            "  limit: " + ", ".join(f"{name} {k}" for name, k in counts.items()),
            f"  decided by |α1/α2| (unstable-mode amplitudes at init): Q1 above "
            f"{by_alpha['upper']:.3g}, Q2 below {by_alpha['lower']:.3g}, shared between, "
            f"{by_alpha['misplaced']} of {by_alpha['total']} runs misplaced; by |C1/C2|: "
            f"{by_c['misplaced']} misplaced at the best boundaries",
            f"results: {out / 'results.npz'}, figure: {out / 'demo.png'}",
        ]
    )
    (out / "summary.txt").write_text(summary + "\n")
    _figure(ds, by_alpha, out / "demo.png")
    return summary


_CLASS_NAMES = {1: "Q1 (neuron 1 alone)", 2: "Q2 (neuron 2 alone)", -1: "shared", 0: "none"}
_CLASS_COLOURS = {1: "tab:blue", 2: "tab:orange", -1: "tab:green", 0: "tab:gray"}


def _figure(ds, by_alpha, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    t = ds["time"].values
    for seed in range(min(30, ds.sizes["seed"])):
        left.loglog(t[1:], ds["loss"].values[seed, 1:], lw=0.8, alpha=0.6)
    left.set(xlabel="time t", ylabel="training loss", title="Loss along the flow (30 seeds)")
    code = ds["target_set"].values
    share = ds["share_of_neuron_1"].values
    for ax, name, label in (
        (middle, "growing_mode_ratio", "|α₁/α₂| at init (decides the limit)"),
        (right, "imbalance_ratio", "|C₁/C₂| at init (does not)"),
    ):
        ratio = np.abs(ds[name].values)
        for k, colour in _CLASS_COLOURS.items():
            m = code == k
            if m.any():
                ax.scatter(ratio[m], share[m], s=4, color=colour, label=_CLASS_NAMES[k])
        ax.set(xscale="log", xlabel=label, ylabel="share of the target carried by neuron 1")
    for value in (by_alpha["lower"], by_alpha["upper"]):
        middle.axvline(value, color="k", lw=0.8)
    # The shared band is narrow: zoom on it (every run outside reached Q¹ or Q²).
    middle.set(
        xlim=(0.2, 5),
        title=f"The limit: boundaries {by_alpha['lower']:.3g} / {by_alpha['upper']:.3g} "
        "(axis cut at 0.2 and 5)",
    )
    right.set(title="The same end points against the imbalance ratio")
    middle.legend(fontsize=7, markerscale=3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
