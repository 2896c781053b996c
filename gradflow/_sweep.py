from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._chunks import fingerprint, run_batches
from ._grid import Grid, pad_samples
from ._network import TwoLayerNet
from ._options import check_flow_kwargs, describe, flow_options
from ._schedule import check_schedule, default_chunk_size, FlowChunk, schedule_for, ScheduleName
from ._solution import warn_if_log_full


Init = Callable[[PRNGKeyArray, Float[Array, ""]], TwoLayerNet]
Data = Callable[[int], tuple[Float[ArrayLike, "n d"], Float[ArrayLike, " n *k"]]]


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
    `squared_loss` ignores exactly (`pad_samples`), and the init scale is a traced
    argument of `init`, so all grid points share one program.

    **Arguments:**

    - `init`: `init(key, scale) -> TwoLayerNet`, e.g.
      `lambda k, s: gradflow.random_net(k, width=2, dim=2, scale=s, activation="tanh")`.
    - `data`: `data(n) -> (x, y)`, called once per size (outside the compiled code).
    - `sizes`, `scales`: the grid; `num_seeds` seeds per grid point. Seed $s$ uses the
      same key at every $(n, \\varepsilon)$, so runs are paired across the grid (see
      `Grid`).
    - `schedule`, `chunk_size`, `num_slots`, `progress`, `checkpoint_dir`, `devices`:
      as `flow_ensemble`.
    - `**flow_kwargs`: passed to `gradient_flow` (`t1`, `ts`, `reduction`, ...).

    **Returns:** an `xarray.Dataset` with dimensions `(n, scale, seed)` (plus `time`
    for saved series and the parameter axes), see `to_dataset`.
    """
    grid = Grid(sizes, scales, num_seeds, seed)
    schedule = check_schedule(schedule, num_slots)
    if "weights" in flow_kwargs:
        raise ValueError("`sweep` sets `weights` itself (to mask padding); do not pass it.")

    n_max = max(grid.sizes)
    padded = []
    for n in grid.sizes:
        x, y = (np.asarray(v) for v in data(n))
        if x.ndim != 2 or x.shape[0] != n or y.shape[:1] != (n,) or y.ndim > 2:
            raise ValueError(
                f"`data({n})` must return x of shape ({n}, d) and y of shape ({n},) (or "
                f"({n}, k) for nets with k outputs), got {x.shape} and {y.shape}."
            )
        if padded and y.shape[1:] != padded[0][1].shape[1:]:
            raise ValueError(
                f"`data({n})` returned y of shape {y.shape}, but `data({grid.sizes[0]})` had "
                f"{padded[0][1].shape[1:]} outputs per sample; every size needs the same."
            )
        padded.append(pad_samples(n_max, x, y))
    xs, ys, ws = (jnp.asarray(np.stack(v)) for v in zip(*padded))

    keys = grid.keys()
    scales = np.asarray(grid.scales)
    dtype = xs.dtype
    probe = init(keys[0], jnp.asarray(scales[0], dtype))
    check_flow_kwargs("sweep", flow_kwargs)
    _, options = flow_options(probe, xs[0], ys[0], ws[0], **flow_kwargs)
    schedule = schedule_for(schedule, probe, flow_kwargs)

    # Each run draws its net inside the compiled chunk and picks its data set by index.
    i_n, i_scale, i_seed = grid.points()
    points = ((keys[i_seed], jnp.asarray(scales[i_scale], dtype)), jnp.asarray(i_n))
    run = FlowChunk(init, (xs, ys, ws), flow_kwargs, schedule=schedule, num_slots=num_slots)
    solution = run_batches(
        run,
        points,
        chunk_size=default_chunk_size(schedule, chunk_size, num_slots),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        fingerprint=fingerprint(
            (xs, ys, scales, seed, num_seeds, flow_kwargs, init, jax.eval_shape(lambda: probe)),
            schedule,
            num_slots,
        ),
        description="sweep chunks",
        devices=devices,
        skip_padding=True,
    )
    return grid.label(warn_if_log_full(solution.with_info(describe(options, (xs, ys, ws)))))
