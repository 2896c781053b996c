"""The embedded default job of `gradflow demo`: a seed ensemble of a single-neuron target."""

import dataclasses
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from ._ensemble import flow_ensemble
from ._init import random_net
from ._labels import to_dataset
from ._network import imbalance
from ._times import log_times


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Workload W1 at a smaller init scale: two tanh neurons learn $\\tanh(x + 1)$ from
    6 points on $[-2, 2]$ (input $(x, 1)$), ½·sum loss, as in Zhao, Bai & Zhang."""

    num_seeds: int = 1000
    scale: float = 1e-12
    width: int = 2
    num_points: int = 6
    t1: float = 400.0
    seed: int = 0
    chunk_size: int = 500

    def data(self):
        s = jnp.linspace(-2.0, 2.0, self.num_points)
        return jnp.stack([s, jnp.ones_like(s)], axis=1), jnp.tanh(s + 1.0)


def population_error(nets, num: int = 401):
    """Mean squared error against the target on a dense grid of $[-2, 2]$."""
    s = jnp.linspace(-2.0, 2.0, num)
    x = jnp.stack([s, jnp.ones_like(s)], axis=1)
    target = jnp.tanh(s + 1.0)
    return jax.vmap(lambda net: jnp.mean((net(x) - target) ** 2))(nets)


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
        chunk_size=config.chunk_size,
        progress=progress,
    )
    wall = time.perf_counter() - start

    ds = to_dataset(sol)
    ds["test_error"] = ("seed", np.asarray(population_error(sol.net)))
    c0 = np.asarray(imbalance(nets))
    ds["imbalance_ratio"] = ("seed", c0[:, 0] / c0[:, 1])
    np.savez(
        out / "results.npz",
        **{name: ds[name].values for name in ds.data_vars},
        time=ds["time"].values,
    )
    err = ds["test_error"].values
    ok = ds["status"].values == 0
    summary = "\n".join(
        [
            f"gradflow demo: {config.num_seeds} seeds, init scale {config.scale:g}, "
            f"width {config.width}, tanh, target tanh(x+1) from {config.num_points} points",
            f"wall time {wall:.1f} s (compilation included), {config.num_seeds / wall:.0f} seeds/s",
            sol.summary(),
            f"  test error: median {np.median(err[ok]):.2e}; below 1e-3 for "
            f"{np.mean(err[ok] < 1e-3):.1%} of seeds",
            f"results: {out / 'results.npz'}, figure: {out / 'demo.png'}",
        ]
    )
    (out / "summary.txt").write_text(summary + "\n")
    _figure(ds, out / "demo.png")
    return summary


def _figure(ds, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    t = ds["time"].values
    for seed in range(min(30, ds.sizes["seed"])):
        left.loglog(t[1:], ds["loss"].values[seed, 1:], lw=0.8, alpha=0.6)
    left.set(xlabel="time t", ylabel="training loss", title="Loss along the flow (30 seeds)")
    ratio = np.abs(ds["imbalance_ratio"].values)
    right.scatter(ratio, ds["test_error"].values, s=4, alpha=0.5)
    right.set(
        xscale="log",
        yscale="log",
        xlabel="initial imbalance ratio |C1/C2|",
        ylabel="test error at t1",
        title="End point vs initial imbalance",
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)
