"""How the runs of one chunk share the solver loop (the `schedule` of `flow_ensemble` and
`sweep`), and the chunk function that runs them."""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, PyTree

from ._flow import gradient_flow
from ._misc import check_positive_int
from ._network import TwoLayerNet
from ._options import runs_piecewise
from ._refill import refill_flow
from ._solution import Solution


Schedule = Literal["refill", "lockstep", "sequential"]
# What `schedule=` accepts: "chunks" is the name "lockstep" had in gradflow 0.1; it is
# still accepted, for one release.
ScheduleName = Literal["refill", "lockstep", "chunks"]
_ALIASES = {"chunks": "lockstep"}

# A refilling chunk holds this many times `num_slots` seeds: its slots idle only while
# the last seeds of the chunk finish.
_REFILL_CHUNK_SLOTS = 16
_LOCKSTEP_CHUNK_SIZE = 256


def check_schedule(schedule: ScheduleName, num_slots: int) -> Schedule:
    """`schedule` by its current name, after checking it and `num_slots`."""
    schedule = _ALIASES.get(schedule, schedule)
    if schedule not in ("refill", "lockstep"):
        raise ValueError(f"`schedule` must be 'refill' or 'lockstep', got {schedule!r}.")
    check_positive_int("num_slots", num_slots)
    return schedule


def schedule_for(schedule: Schedule, net: TwoLayerNet, flow_kwargs: dict) -> Schedule:
    """`"sequential"` where `gradient_flow` with these options is more than an ODE
    solver stepping a smooth field: the exact flow of an activation with kinks, an event
    loop per seed. Neither slots nor lockstep suit it: under `vmap` every seed would
    pay for every other seed's event searches (both branches of each `cond` run), so
    8 ReLU seeds took 48-50 s in lockstep against about 1 s each alone (issue 16). One
    seed after another inside the compiled chunk is never slower than a loop over
    `gradient_flow`. `schedule` otherwise."""
    piecewise = runs_piecewise(net, flow_kwargs.get("kinks", "exact"), flow_kwargs.get("trainable"))
    return "sequential" if piecewise else schedule


def default_chunk_size(schedule: Schedule, chunk_size: int | None, num_slots: int) -> int:
    if chunk_size is not None:
        return chunk_size
    return _REFILL_CHUNK_SLOTS * num_slots if schedule == "refill" else _LOCKSTEP_CHUNK_SIZE


class FlowChunk(eqx.Module):
    """`gradient_flow` from every point of one chunk, the points sharing the solver loop
    as `schedule` says:

    - `"lockstep"`: `jax.vmap` of `gradient_flow`, so every point takes as many loop
      iterations as the slowest one of its chunk;
    - `"sequential"`: one point after another (`jax.lax.map`), each its own loop: the
      exact flows of activations with kinks;
    - `"refill"`: `num_slots` points side by side, a slot refilled as soon as its point
      ends (`refill_flow`).

    A chunk is `(inputs, data_index)`, each with a leading point axis, and `real` says which
    of its points are real (False for the repeats that pad the last chunk: the sequential
    schedule skips them; the others run them alongside, at no extra wall time). `inputs` are the
    initial nets, or, with `init`, the arguments of `init(*inputs) -> net` (so a sweep
    draws each net inside the compiled program). `data_index` is `None` where every
    point uses `data`, or picks each point's data set from the table `data`.

    A module rather than a closure: `filter_jit` traces its arrays, so every chunk of
    every run with the same structure and options reuses one compilation (a closure
    made per call would compile anew).
    """

    init: Callable[..., TwoLayerNet] | None = eqx.field(static=True)
    # (x, y, weights): shared, (n, d), (n,), (n,); or a table (K, n, d), (K, n), (K, n).
    data: tuple
    flow_kwargs: dict
    schedule: Schedule = eqx.field(static=True)
    num_slots: int = eqx.field(static=True)

    def __call__(self, chunk: tuple[PyTree, PyTree], real: Bool[Array, " points"]) -> Solution:
        inputs, data_index = chunk
        nets = inputs if self.init is None else jax.vmap(self.init)(*inputs)
        if self.schedule == "lockstep":
            return jax.vmap(self._one)(nets, data_index)
        if self.schedule == "sequential":
            return jax.lax.map(lambda point: self._one_if_real(*point), (nets, data_index, real))
        x, y, weights = self.data
        solution, _ = refill_flow(
            nets, x, y, weights=weights, data_index=data_index, num_slots=self.num_slots,
            **self.flow_kwargs,
        )  # fmt: skip
        return solution

    def _one_if_real(self, net: TwoLayerNet, i, real) -> Solution:
        """`_one`, or zeros of its shape for a padding point (a run of its own here)."""
        static = []

        def run():
            arrays, static_part = eqx.partition(self._one(net, i), eqx.is_array)
            static.append(static_part)  # `cond` returns arrays only
            return arrays

        shapes = jax.eval_shape(run)
        skipped = lambda: jax.tree_util.tree_map(lambda v: jnp.zeros(v.shape, v.dtype), shapes)  # noqa: E731
        return eqx.combine(jax.lax.cond(real, run, skipped), static[-1])

    def _one(self, net: TwoLayerNet, i) -> Solution:
        data = self.data if i is None else jax.tree_util.tree_map(lambda v: v[i], self.data)
        x, y, weights = data
        return gradient_flow(net, x, y, weights=weights, **self.flow_kwargs)
