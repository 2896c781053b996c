"""A batch function run with its leading axis sharded over several devices, each device
running its own copy on its share (its own solver loop, so it waits only for its own
slowest seed)."""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.extend.core as jex
from jaxtyping import PyTree


def sharded(batch_fn: Callable[[PyTree], PyTree], devices) -> Callable[[PyTree], PyTree]:
    """`batch_fn` (stacked inputs to stacked outputs) compiled, with its leading axis
    sharded over `devices`: each device runs `batch_fn` on its share. The leading axis
    of every input must be a multiple of `len(devices)`."""
    if len(devices) == 1:
        return eqx.filter_jit(batch_fn)
    mesh = jax.make_mesh((len(devices),), ("seeds",), devices=devices)
    compiled = eqx.filter_jit(_ShardedBatch(batch_fn, mesh))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))

    def call(inputs):
        arrays, static = eqx.partition(inputs, eqx.is_array)
        return compiled(eqx.combine(jax.device_put(arrays, sharding), static))

    return call


class _ShardedBatch(eqx.Module):
    """`batch_fn` on each device's share of a batch, under `shard_map`. A module rather
    than a closure: `filter_jit` then reuses one compilation for every call with the
    same structure (a closure made per call recompiled on every call: 14 s each for 1000
    W1 seeds on two devices)."""

    batch_fn: Callable
    mesh: jax.sharding.Mesh = eqx.field(static=True)

    def __call__(self, inputs):
        arrays, static = eqx.partition(inputs, eqx.is_array)
        leaves, treedef = jax.tree_util.tree_flatten(arrays)
        num_devices = self.mesh.devices.size
        shard_shapes = [
            jax.ShapeDtypeStruct((leaf.shape[0] // num_devices, *leaf.shape[1:]), leaf.dtype)
            for leaf in leaves
        ]
        out_static = []

        def per_device(*shard):
            out = self.batch_fn(eqx.combine(jax.tree_util.tree_unflatten(treedef, shard), static))
            out_arrays, out_static_part = eqx.partition(out, eqx.is_array)
            out_static.append(out_static_part)  # shard_map returns arrays only
            return out_arrays

        # Traced once, here, so that the program can be checked before it runs.
        program, out_shapes = jax.make_jaxpr(per_device, return_shape=True)(*shard_shapes)
        if self.mesh.devices.flat[0].platform == "cpu":
            check_host_parallel_safe(program.jaxpr, num_devices)
        spec = jax.sharding.PartitionSpec("seeds")
        # check_vma=False: Diffrax's while loops carry values that the replication
        # checker cannot type; every seed's computation is independent anyway.
        out_leaves = jax.shard_map(
            jex.jaxpr_as_fun(program), mesh=self.mesh, in_specs=spec, out_specs=spec,
            check_vma=False,
        )(*leaves)  # fmt: skip
        out_treedef = jax.tree_util.tree_structure(out_shapes)
        out_arrays = jax.tree_util.tree_unflatten(out_treedef, out_leaves)
        # `filter_jit` returns the non-array parts as traced, so they survive the cache.
        return eqx.combine(out_arrays, out_static[0])


# Primitives that jaxlib runs on the CPU as LAPACK/BLAS/ducc kernels which split a
# batch over XLA:CPU's intra-op thread pool and block a pool thread until the pieces are
# done. Several host devices run their programs on that same pool, so two devices each
# inside such a batched call can wait for pieces queued behind each other: a deadlock
# (issue 16). One matrix per call is safe (no split), which is how gradflow's own
# Rosenbrock steps call LU (`_solver/base.py`).
_BATCH_SPLITTING_KERNELS = frozenset(
    {
        "lu",
        "cholesky",
        "eigh",
        "eig",
        "svd",
        "qr",
        "geqrf",
        "geqp3",
        "householder_product",
        "schur",
        "hessenberg",
        "tridiagonal",
        "tridiagonal_solve",
        "triangular_solve",
        "fft",
    }
)


def check_host_parallel_safe(jaxpr: jex.Jaxpr, num_devices: int) -> None:
    """Refuses a program that calls a batched LAPACK-type kernel, which can deadlock
    when `num_devices` host devices run at once."""
    name = _batched_kernel(jaxpr)
    if name is not None:
        raise ValueError(
            f"This run would call the CPU linear-algebra kernel `{name}` on a batch of "
            f"matrices while {num_devices} host devices run at once, which can deadlock "
            "XLA:CPU's thread pool (each device's batched call waits for work queued "
            "behind the other's). It comes from a solver or an observable that vmaps "
            "`jnp.linalg`/`jax.scipy.linalg`/FFT over seeds. Run on one device "
            "(`devices=jax.local_devices()[:1]`), or wrap that function in "
            "`jax.custom_batching.sequential_vmap` so that it runs one matrix per call."
        )


def _batched_kernel(jaxpr: jex.Jaxpr) -> str | None:
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in _BATCH_SPLITTING_KERNELS and eqn.invars:
            shape = eqn.invars[0].aval.shape
            core_rank = len(eqn.params["fft_lengths"]) if name == "fft" else 2
            if math.prod(shape[:-core_rank]) > 1:
                return name
        for sub in jex.jaxprs_in_params(eqn.params):
            found = _batched_kernel(sub)
            if found is not None:
                return found
    return None
