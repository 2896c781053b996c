import pathlib

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from ._chunks import fingerprint, run_batches
from ._misc import check_finite
from ._network import TwoLayerNet
from ._options import check_flow_kwargs, describe, flow_options
from ._schedule import check_schedule, default_chunk_size, FlowChunk, schedule_for, ScheduleName
from ._solution import Solution, warn_if_log_full
from ._validate import check_init_scale


def flow_ensemble(
    nets: TwoLayerNet,
    x: Float[ArrayLike, "... n d"],
    y: Float[ArrayLike, "..."],  # (..., n) or (..., n, k)
    *,
    weights: Float[ArrayLike, "... n"] | None = None,
    schedule: ScheduleName = "refill",
    chunk_size: int | None = None,
    num_slots: int = 128,
    progress: bool = True,
    checkpoint_dir: "str | pathlib.Path | None" = None,
    devices=None,
    **flow_kwargs,
) -> Solution:
    """Runs `gradient_flow` for a stacked batch of initial networks, one compiled call
    per chunk of seeds.

    **Arguments:**

    - `nets`: a `TwoLayerNet` whose arrays have a leading seed axis, e.g. from
      `jax.vmap(lambda k: gradflow.random_net(k, ...))(keys)`.
    - `x`, `y`, `weights`: shared data `(n, d)`, `(n,)` (`y` of shape `(n, k)` for
      nets with k outputs), or per-seed data with the same leading seed axis.
    - `schedule`: how the seeds of a chunk share the solver loop.
        - `"refill"` (default): `num_slots` seeds are integrated side by side, and a slot
          whose seed ends takes the next seed at once (see `refill_flow`), so no
          seed waits for a slower one; on a mixed-scale W1 ensemble the slots are busy
          92% of the time (71% in lockstep chunks of 128), and the run takes 3× less
          wall time (`benchmarks/escape_lockstep.py`).
        - `"lockstep"`: `jax.vmap` of `gradient_flow` over the chunk: every seed of a
          chunk takes as many loop iterations as its slowest one. `"chunks"`, its
          name in gradflow 0.1, is accepted as an alias until the next release.

      For an activation with kinks (ReLU, ...) and `kinks="exact"` (the default) both
      give way to one seed after another inside the compiled chunk: each exact flow
      is its own event loop, and in any batch every seed would pay for every other
      seed's event searches.
    - `chunk_size`: seeds per compiled call; bounds memory and is the unit of
      checkpoints and progress. Default: 256 for `"lockstep"`, 16 × `num_slots` for
      `"refill"` (whose slots idle only in the tail of a chunk, so a chunk should hold
      many times `num_slots` seeds).
    - `num_slots`: for `"refill"`, the seeds in flight at once (per device).
    - `progress`: show a progress bar across chunks.
    - `checkpoint_dir`: keep finished chunks on disk and resume from them.
    - `devices`: devices to shard each chunk's seeds over (default: all local ones);
      each runs its own solver loop (its own refilling loop over its share).
    - `**flow_kwargs`: passed to `gradient_flow` (`t1`, `ts`, `rtol`, ...).

    **Returns:** a `Solution` with a leading seed axis (NumPy arrays). A seed that
    fails has a non-zero `status`; the others are unaffected.
    """
    if not isinstance(nets, TwoLayerNet) or nets.W.ndim != 3:
        raise ValueError(
            "`nets` must be a stacked `TwoLayerNet` with `W` of shape (seeds, m, d) (and `a` "
            "of shape (seeds, m), or (seeds, m, k) for k outputs); build one with "
            "`jax.vmap` over keys."
        )
    num_seeds = nets.a.shape[0]
    x, y = jnp.asarray(x), jnp.asarray(y)
    per_seed = x.ndim == 3
    if per_seed and (x.shape[0] != num_seeds or y.shape[:1] != (num_seeds,)):
        raise ValueError(
            f"Per-seed `x` and `y` need a leading axis of {num_seeds} seeds, got "
            f"{x.shape} and {y.shape}."
        )
    first = jax.tree_util.tree_map(lambda v: v[0], nets)
    pick = (lambda v: None if v is None else jnp.asarray(v)[0]) if per_seed else (lambda v: v)
    check_flow_kwargs("flow_ensemble", flow_kwargs)
    # Every check of `gradient_flow`, the first seed standing for all, before any compile.
    _, options = flow_options(first, pick(x), pick(y), pick(weights), **flow_kwargs)
    for name, value in (("nets", nets.a), ("nets", nets.W), ("nets", nets.b), ("x", x), ("y", y)):
        check_finite(name, value)
    check_init_scale(nets)
    schedule = schedule_for(check_schedule(schedule, num_slots), first, flow_kwargs)
    data = (x, y, None if weights is None else jnp.asarray(weights))

    # Per-seed data is a table of data sets, seed i's at row i.
    run = FlowChunk(None, data, flow_kwargs, schedule=schedule, num_slots=num_slots)
    seeds = jnp.arange(num_seeds) if per_seed else None
    solution = run_batches(
        run,
        (nets, seeds),
        chunk_size=default_chunk_size(schedule, chunk_size, num_slots),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        fingerprint=fingerprint(
            (nets, data if per_seed else None), data, flow_kwargs, schedule, num_slots
        ),
        description="seeds/chunk",
        devices=devices,
        skip_padding=True,
    )
    return warn_if_log_full(solution.with_info(describe(options, data)))
