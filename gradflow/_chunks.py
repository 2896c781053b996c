"""A function mapped over a large batch in fixed-size chunks: one compilation, bounded
device memory, progress, checkpoints on disk and every local device."""

import hashlib
import pathlib
from collections.abc import Callable

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PyTree
from tqdm.auto import tqdm

from ._misc import check_positive_int
from ._sharding import sharded
from ._store import ChunkStore


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
    return run_batches(
        jax.vmap(fn),
        inputs,
        chunk_size=chunk_size,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        fingerprint=fingerprint,
        description=description,
        devices=devices,
    )


def run_batches(
    batch_fn: Callable[[PyTree], PyTree],
    inputs: PyTree,
    *,
    chunk_size: int,
    progress: bool,
    checkpoint_dir: "str | pathlib.Path | None",
    fingerprint: str,
    description: str,
    devices,
    skip_padding: bool = False,
) -> PyTree:
    """`run_chunks` for a function `batch_fn` of a whole chunk (stacked inputs to
    stacked outputs), such as `jax.vmap(fn)` or a refilling loop.

    The last chunk is padded to full size with repeats of the first point, whose results
    are discarded. With `skip_padding`, `batch_fn` is called as `batch_fn(chunk, real)`,
    `real` True for the chunk's real points and False for the padding, so a function that
    runs its points one after another can skip the repeats instead of running them in
    full."""
    leaves = jax.tree_util.tree_leaves(inputs)
    if not leaves:
        raise ValueError("`inputs` must contain at least one array.")
    total = leaves[0].shape[0]
    if total == 0:
        raise ValueError("The batch is empty: nothing to run.")
    check_positive_int("chunk_size", chunk_size)
    devices = jax.local_devices() if devices is None else list(devices)
    # Every device gets the same share of each chunk.
    chunk_size = -(-min(chunk_size, total) // len(devices)) * len(devices)
    num_chunks = -(-total // chunk_size)
    store = None if checkpoint_dir is None else ChunkStore(checkpoint_dir, fingerprint)
    fn = _Masked(batch_fn) if skip_padding else batch_fn
    batched = sharded(fn, devices)
    out_treedef, results = None, []
    for i in tqdm(range(num_chunks), desc=description, disable=not progress):
        cached = None if store is None else store.load(i)
        if cached is not None:
            results.append(cached)
            continue
        index = np.arange(i * chunk_size, (i + 1) * chunk_size)
        real = index < total
        index = np.where(real, index, 0)  # pad with a repeat of the first point
        chunk = jax.tree_util.tree_map(lambda leaf: leaf[index], inputs)
        out = batched((chunk, real) if skip_padding else chunk)
        arrays, static = eqx.partition(out, eqx.is_array)
        out_leaves, out_treedef = jax.tree_util.tree_flatten(arrays)
        host = [np.asarray(leaf) for leaf in out_leaves]
        if store is not None:
            store.save(i, host)
        results.append(host)
    if out_treedef is None:  # every chunk came from disk: trace once for the structure
        one = jax.tree_util.tree_map(lambda v: v[:1], inputs)
        shapes = jax.eval_shape(fn, (one, np.ones(1, bool)) if skip_padding else one)
        arrays, static = eqx.partition(shapes, lambda v: isinstance(v, jax.ShapeDtypeStruct))
        out_treedef = jax.tree_util.tree_structure(arrays)
    stacked = [np.concatenate(parts)[:total] for parts in zip(*results)]
    return eqx.combine(jax.tree_util.tree_unflatten(out_treedef, stacked), static)


class _Masked(eqx.Module):
    """`batch_fn(chunk, real)` as a function of the pair: one argument, as `sharded` maps.
    A module, not a closure, so that every call with the same `batch_fn` reuses one
    compilation."""

    batch_fn: Callable

    def __call__(self, chunk_and_real):
        return self.batch_fn(*chunk_and_real)


def fingerprint(*trees) -> str:
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
