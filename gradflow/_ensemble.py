import hashlib
import json
import pathlib
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, PyTree
from tqdm.auto import tqdm

from ._flow import gradient_flow
from ._misc import check_finite
from ._network import TwoLayerNet
from ._problem import runs_piecewise
from ._refill import refill_flow
from ._sharding import sharded
from ._solution import Solution
from ._validate import check_init_scale, check_problem


Schedule = Literal["refill", "lockstep"]
# What `schedule=` accepts: "chunks" is the name "lockstep" had in gradflow 0.1; it is
# still accepted, for one release.
ScheduleName = Literal["refill", "lockstep", "chunks"]
_ALIASES = {"chunks": "lockstep"}

# A refilling chunk holds this many times `num_slots` seeds: its slots idle only while
# the last seeds of the chunk finish.
_REFILL_CHUNK_SLOTS = 16


def run_chunks(
    fn: Callable[[PyTree], PyTree],
    inputs: PyTree,
    *,
    chunk_size: int,
    progress: bool = True,
    checkpoint_dir: "str | pathlib.Path | None" = None,
    fingerprint: str = "",
    description: str = "chunks",
    devices=None,
) -> PyTree:
    """Maps `fn` over the leading axis of `inputs` in fixed-size chunks.

    `fn` is vmapped and jitted once: every chunk, the last one padded to full size,
    has the same shapes, so the whole batch costs one compilation. Results are moved
    to host memory (NumPy) chunk by chunk, which bounds device memory by
    `chunk_size`. With `checkpoint_dir`, each finished chunk is written to disk and
    a rerun with the same `fingerprint` skips it, so an interrupted sweep never
    loses finished work. With several `devices` (default: all local devices) each
    chunk is split over them with `shard_map`, and every device runs its own
    solver loop, so a device waits only for its own slowest seed.
    """
    return _run_batches(
        jax.vmap(fn),
        inputs,
        chunk_size=chunk_size,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        fingerprint=fingerprint,
        description=description,
        devices=devices,
    )


def _run_batches(
    batch_fn: Callable[[PyTree], PyTree],
    inputs: PyTree,
    *,
    chunk_size: int,
    progress: bool,
    checkpoint_dir,
    fingerprint: str,
    description: str,
    devices,
) -> PyTree:
    """`run_chunks` for a function `batch_fn` of a whole chunk (stacked inputs to
    stacked outputs), such as `jax.vmap(fn)` or a refilling loop."""
    leaves = jax.tree_util.tree_leaves(inputs)
    if not leaves:
        raise ValueError("`inputs` must contain at least one array.")
    total = leaves[0].shape[0]
    if total == 0:
        raise ValueError("The batch is empty: nothing to run.")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size!r}.")
    devices = jax.local_devices() if devices is None else list(devices)
    # Every device gets the same share of each chunk.
    chunk_size = -(-min(chunk_size, total) // len(devices)) * len(devices)
    num_chunks = -(-total // chunk_size)
    store = None if checkpoint_dir is None else _ChunkStore(checkpoint_dir, fingerprint)
    batched = sharded(batch_fn, devices)
    out_treedef, results = None, []
    for i in tqdm(range(num_chunks), desc=description, disable=not progress):
        cached = None if store is None else store.load(i)
        if cached is not None:
            results.append(cached)
            continue
        index = np.arange(i * chunk_size, (i + 1) * chunk_size)
        index = np.where(index < total, index, 0)  # pad with a repeat of seed 0
        chunk = jax.tree_util.tree_map(lambda leaf: leaf[index], inputs)
        out = batched(chunk)
        arrays, static = eqx.partition(out, eqx.is_array)
        out_leaves, out_treedef = jax.tree_util.tree_flatten(arrays)
        host = [np.asarray(leaf) for leaf in out_leaves]
        if store is not None:
            store.save(i, host)
        results.append(host)
    if out_treedef is None:  # every chunk came from disk: trace once for the structure
        shapes = jax.eval_shape(batch_fn, jax.tree_util.tree_map(lambda v: v[:1], inputs))
        arrays, static = eqx.partition(shapes, lambda v: isinstance(v, jax.ShapeDtypeStruct))
        out_treedef = jax.tree_util.tree_structure(arrays)
    stacked = [np.concatenate(parts)[:total] for parts in zip(*results)]
    return eqx.combine(jax.tree_util.tree_unflatten(out_treedef, stacked), static)


class _ChunkStore:
    def __init__(self, directory, fingerprint: str):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tag = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        meta = self.directory / "fingerprint.json"
        if meta.exists() and json.loads(meta.read_text())["tag"] != self.tag:
            raise ValueError(
                f"`checkpoint_dir` {str(self.directory)!r} holds chunks of a different "
                "run (other data, grid or options). Use a new directory, or delete it."
            )
        meta.write_text(json.dumps({"tag": self.tag, "fingerprint": fingerprint}))

    def _path(self, i: int) -> pathlib.Path:
        return self.directory / f"chunk_{i:06d}.npz"

    def load(self, i: int):
        path = self._path(i)
        if not path.exists():
            return None
        with np.load(path) as data:
            return [data[f"leaf_{j}"] for j in range(len(data.files))]

    def save(self, i: int, leaves) -> None:
        # Write then rename, so a crash mid-write never leaves a truncated chunk.
        tmp = self._path(i).with_suffix(".tmp.npz")
        np.savez(tmp, **{f"leaf_{j}": leaf for j, leaf in enumerate(leaves)})
        tmp.replace(self._path(i))


def flow_ensemble(
    nets: TwoLayerNet,
    x: Float[ArrayLike, "... n d"],
    y: Float[ArrayLike, "... n"],
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
    - `x`, `y`, `weights`: shared data `(n, d)`, `(n,)`, or per-seed data with the
      same leading seed axis.
    - `schedule`: how the seeds of a chunk share the solver loop.
        - `"refill"` (default): `num_slots` seeds are integrated side by side, and a slot
          whose seed ends takes the next seed at once (see `gradflow._refill`), so no
          seed waits for a slower one; on a mixed-scale W1 ensemble the slots are busy
          92% of the time (71% in lockstep chunks of 128), and the run takes 3× less
          wall time (`benchmarks/escape_lockstep.py`).
        - `"lockstep"`: `jax.vmap` of `gradient_flow` over the chunk: every seed of a
          chunk takes as many loop iterations as its slowest one. Also what
          `"refill"` falls back to for an activation with kinks (ReLU, ...), whose exact
          flow (`kinks="exact"`, the default) is event-driven per seed. `"chunks"`, its
          name in gradflow 0.1, is accepted as an alias until the next release.
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
    if not isinstance(nets, TwoLayerNet) or nets.a.ndim != 2:
        raise ValueError(
            "`nets` must be a stacked `TwoLayerNet` with `a` of shape (seeds, m); "
            "build one with `jax.vmap` over keys."
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
    check_problem(first, pick(x), pick(y), pick(weights))
    for name, value in (("nets", nets.a), ("nets", nets.W), ("nets", nets.b), ("x", x), ("y", y)):
        check_finite(name, value)
    check_init_scale(nets)
    schedule = check_schedule(schedule, num_slots)
    if needs_lockstep(first, flow_kwargs):
        schedule = "lockstep"
    data = (x, y, None if weights is None else jnp.asarray(weights))

    run = _EnsembleChunk(
        None if per_seed else data,
        flow_kwargs,
        per_seed=per_seed,
        schedule=schedule,
        num_slots=num_slots,
    )
    batch = (nets, data if per_seed else None)
    return _run_batches(
        run,
        batch,
        chunk_size=default_chunk_size(schedule, chunk_size, num_slots),
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        fingerprint=_fingerprint(batch, data, flow_kwargs, schedule, num_slots),
        description="seeds/chunk",
        devices=devices,
    )


class _EnsembleChunk(eqx.Module):
    """`flow_ensemble` on one chunk `(nets, per-seed data or None)`. A module rather than
    a closure: `filter_jit` traces its arrays, so every call with the same structure and
    options reuses one compilation (a new closure per call would compile anew)."""

    data: tuple | None  # shared data; None where each seed brings its own
    flow_kwargs: dict
    per_seed: bool = eqx.field(static=True)
    schedule: Schedule = eqx.field(static=True)
    num_slots: int = eqx.field(static=True)

    def __call__(self, inputs):
        nets, data_chunk = inputs
        if self.schedule == "lockstep":

            def one(net, data_i):
                x_i, y_i, w_i = data_i if self.per_seed else self.data
                return gradient_flow(net, x_i, y_i, weights=w_i, **self.flow_kwargs)

            return jax.vmap(one)(nets, data_chunk if self.per_seed else None)
        if self.per_seed:  # each seed its own row of the chunk's data table
            index = jnp.arange(nets.a.shape[0])
            x, y, weights = data_chunk
        else:
            index, (x, y, weights) = None, self.data
        solution, _ = refill_flow(
            nets, x, y, weights=weights, data_index=index, num_slots=self.num_slots,
            **self.flow_kwargs,
        )  # fmt: skip
        return solution


def needs_lockstep(net: TwoLayerNet, flow_kwargs: dict) -> bool:
    """Whether `gradient_flow` with these options is more than an ODE solver stepping a
    smooth field, which the refilling loop cannot run: the exact flow of an activation
    with kinks, event-driven per seed."""
    return runs_piecewise(net, flow_kwargs.get("kinks", "exact"))


def check_schedule(schedule: ScheduleName, num_slots: int) -> Schedule:
    """`schedule` by its current name, after checking it and `num_slots`."""
    schedule = _ALIASES.get(schedule, schedule)
    if schedule not in ("refill", "lockstep"):
        raise ValueError(f"`schedule` must be 'refill' or 'lockstep', got {schedule!r}.")
    if not isinstance(num_slots, int) or isinstance(num_slots, bool) or num_slots < 1:
        raise ValueError(f"`num_slots` must be a positive integer, got {num_slots!r}.")
    return schedule


def default_chunk_size(schedule: Schedule, chunk_size: int | None, num_slots: int) -> int:
    if chunk_size is not None:
        return chunk_size
    return 256 if schedule == "lockstep" else _REFILL_CHUNK_SLOTS * num_slots


def _fingerprint(*trees) -> str:
    """A digest of every array and option, so stored chunks are only reused for the
    very same run."""
    digest = hashlib.sha256(str(jax.tree_util.tree_structure(trees)).encode())
    for leaf in jax.tree_util.tree_leaves(trees):
        if isinstance(leaf, jax.Array | np.ndarray):
            digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
        elif callable(leaf) and hasattr(leaf, "__qualname__"):
            # Not `repr`: a function's repr holds its address, new in every process.
            digest.update(f"{leaf.__module__}.{leaf.__qualname__}".encode())
        else:
            digest.update(repr(leaf).encode())
    return digest.hexdigest()
