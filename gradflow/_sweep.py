from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._ensemble import (
    _fingerprint,
    _run_batches,
    check_schedule,
    default_chunk_size,
    needs_lockstep,
    Schedule,
    ScheduleName,
)
from ._flow import gradient_flow
from ._labels import to_dataset
from ._network import TwoLayerNet
from ._refill import refill_flow
from ._validate import check_problem


Init = Callable[[PRNGKeyArray, Float[Array, ""]], TwoLayerNet]
Data = Callable[[int], tuple[Float[ArrayLike, "n d"], Float[ArrayLike, " n"]]]


def sweep(
    init: Init,
    data: Data,
    *,
    sizes: Sequence[int],
    scales: Sequence[float],
    num_seeds: int,
    seed: int = 0,
    schedule: ScheduleName = "refill",
    chunk_size: int | None = None,
    num_slots: int = 128,
    progress: bool = True,
    checkpoint_dir=None,
    devices=None,
    **flow_kwargs,
):
    """Gradient flow over the grid (sample size $n$) × (init scale $\\varepsilon$) × seed,
    compiled **once**.

    Every data set is padded to the largest $n$ with zero-weight samples, which
    `squared_loss` ignores exactly, and the init scale is a traced argument of
    `init`, so all grid points share one program.

    **Arguments:**

    - `init`: `init(key, scale) -> TwoLayerNet`, e.g.
      `lambda k, s: gradflow.random_net(k, width=2, dim=2, scale=s, activation="tanh")`.
    - `data`: `data(n) -> (x, y)`, called once per size (outside the compiled code).
    - `sizes`, `scales`: the grid; `num_seeds` seeds per grid point. Seed $s$ uses the
      same key at every $(n, \\varepsilon)$, so runs are paired across the grid.
    - `schedule`, `chunk_size`, `num_slots`, `progress`, `checkpoint_dir`, `devices`:
      as `flow_ensemble`.
    - `**flow_kwargs`: passed to `gradient_flow` (`t1`, `ts`, `reduction`, ...).

    **Returns:** an `xarray.Dataset` with dimensions `(n, scale, seed)` (plus `time`
    for saved series and the parameter axes), see `to_dataset`.
    """
    sizes = [int(n) for n in sizes]
    scales = np.asarray(scales, dtype=np.float64)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"`sizes` must be a non-empty list of positive integers, got {sizes}.")
    if scales.ndim != 1 or scales.size == 0 or not np.all(scales > 0):
        raise ValueError(f"`scales` must be a non-empty list of positive numbers, got {scales}.")
    if not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"`num_seeds` must be a positive integer, got {num_seeds!r}.")
    schedule = check_schedule(schedule, num_slots)
    if "weights" in flow_kwargs:
        raise ValueError("`sweep` sets `weights` itself (to mask padding); do not pass it.")

    n_max = max(sizes)
    xs, ys, ws = [], [], []
    for n in sizes:
        x, y = (np.asarray(v) for v in data(n))
        if x.ndim != 2 or x.shape[0] != n or y.shape != (n,):
            raise ValueError(
                f"`data({n})` must return x of shape ({n}, d) and y of shape ({n},), "
                f"got {x.shape} and {y.shape}."
            )
        pad = n_max - n
        xs.append(np.pad(x, ((0, pad), (0, 0))))
        ys.append(np.pad(y, (0, pad)))
        ws.append(np.pad(np.ones(n, x.dtype), (0, pad)))
    xs, ys, ws = (jnp.asarray(np.stack(v)) for v in (xs, ys, ws))

    keys = jax.random.split(jax.random.key(seed), num_seeds)
    dtype = xs.dtype
    probe = init(keys[0], jnp.asarray(scales[0], dtype))
    check_problem(probe, xs[0], ys[0], ws[0])
    if needs_lockstep(probe, flow_kwargs):
        schedule = "lockstep"

    # Flatten the grid (n, scale, seed) into one batch axis, in C order.
    i_n, i_s, i_seed = (v.ravel() for v in np.indices((len(sizes), scales.size, num_seeds)))
    batch = dict(i_n=jnp.asarray(i_n), scale=jnp.asarray(scales[i_s], dtype), key=keys[i_seed])

    run = _SweepChunk(init, (xs, ys, ws), flow_kwargs, schedule=schedule, num_slots=num_slots)
    solution = _run_batches(
        run,
        batch,
        chunk_size=default_chunk_size(schedule, chunk_size, num_slots),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        fingerprint=_fingerprint(
            (xs, ys, scales, seed, num_seeds, flow_kwargs, init, jax.eval_shape(lambda: probe)),
            schedule,
            num_slots,
        ),
        description="sweep chunks",
        devices=devices,
    )
    grid = dict(n=np.asarray(sizes), scale=scales, seed=np.arange(num_seeds))
    return to_dataset(solution, grid)


class _SweepChunk(eqx.Module):
    """`sweep` on one chunk of grid points `{i_n, scale, key}`; a module rather than a
    closure so that repeated sweeps of the same structure reuse one compilation."""

    init: Callable = eqx.field(static=True)
    data: tuple  # (xs, ys, ws): one padded data set per size
    flow_kwargs: dict
    schedule: Schedule = eqx.field(static=True)
    num_slots: int = eqx.field(static=True)

    def __call__(self, points):
        xs, ys, ws = self.data
        if self.schedule == "lockstep":

            def one(point):
                net = self.init(point["key"], point["scale"])
                i = point["i_n"]
                return gradient_flow(net, xs[i], ys[i], weights=ws[i], **self.flow_kwargs)

            return jax.vmap(one)(points)
        # Every grid point's net once, then the data set of each by its index.
        nets = jax.vmap(self.init)(points["key"], points["scale"])
        solution, _ = refill_flow(
            nets, xs, ys, weights=ws, data_index=points["i_n"], num_slots=self.num_slots,
            **self.flow_kwargs,
        )  # fmt: skip
        return solution
