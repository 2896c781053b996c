from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from ._loss import Reduction, squared_loss
from ._misc import check_positive, check_reduction, is_traced, ravel_net
from ._network import TwoLayerNet
from ._options import Observables
from ._solution import assemble, observe, Solution
from ._status import Status, StopReason
from ._trainable import check_trainable, freeze, trainable_mask
from ._validate import check_problem, check_times


def gradient_descent(
    net: TwoLayerNet,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *k"],
    *,
    learning_rate: float,
    t1: float,
    ts: Float[ArrayLike, " T"] | None = None,
    weights: Float[ArrayLike, " n"] | None = None,
    reduction: Reduction = "mean",
    optimizer: optax.GradientTransformation | None = None,
    observables: Observables | None = None,
    trainable: Sequence[str] | None = None,
) -> Solution:
    """The discrete baseline: $\\theta_{k+1} = \\theta_k - \\eta \\nabla L(\\theta_k)$, or any
    Optax optimizer, on the same problem and with the same `Solution` as `gradient_flow`.

    Step $k$ is identified with time $t = k\\eta$, so the two can be compared at the
    same times (see `distance_to_flow`): a time in `ts` is rounded to the nearest step,
    and `Solution.ts` reports the time $k\\eta$ of the state saved there. For save
    times that are multiples of $\\eta$ they are the requested ones.

    **Arguments:** as `gradient_flow`, plus

    - `learning_rate`: $\\eta$; also the time per step. Must be a concrete number.
    - `t1`: run `round(t1 / learning_rate)` steps.
    - `optimizer`: an Optax transformation; default `optax.sgd(learning_rate)`. For
      another optimizer (e.g. Adam) `learning_rate` still sets the time per step.
    - `trainable`: as `gradient_flow`; the frozen parameters' updates are zeroed (after
      the optimizer, so weight decay does not move them either).
    """
    x, y, weights = check_problem(net, x, y, weights)
    check_positive("learning_rate", learning_rate)
    if is_traced(learning_rate) or is_traced(t1):
        raise ValueError(
            "`learning_rate` and `t1` set the number of steps and must be concrete "
            "numbers, not traced values; close over them instead of vmapping them."
        )
    # From the number as given: under `jit`, `check_times` returns it as a traced array.
    steps_exact = float(t1) / learning_rate
    t1, ts = check_times(t1, ts, x.dtype)
    num_steps = int(np.rint(steps_exact))
    if num_steps < 1:
        raise ValueError(f"`t1` / `learning_rate` = {steps_exact} is under one step.")
    check_reduction(reduction)
    trainable = check_trainable(net, trainable)
    optimizer = optax.sgd(learning_rate) if optimizer is None else optimizer
    save_steps = jnp.clip(jnp.rint(ts / learning_rate).astype(jnp.int32), 0, num_steps)
    return _gradient_descent(
        net,
        x,
        y,
        weights,
        save_steps,
        ts,
        jnp.asarray(learning_rate, x.dtype),
        reduction=reduction,
        optimizer=optimizer,
        observables=dict(observables or {}),
        num_steps=num_steps,
        trainable=trainable,
    )


@eqx.filter_jit
def _gradient_descent(
    net,
    x,
    y,
    weights,
    save_steps,
    ts,
    learning_rate,
    *,
    reduction,
    optimizer,
    observables,
    num_steps,
    trainable,
):
    theta0, unravel = ravel_net(net)
    moves = trainable_mask(net, trainable)

    def loss_of(theta):
        return squared_loss(freeze(unravel(theta), net, trainable), x, y, weights, reduction)

    gradient = jax.grad(loss_of)

    def step(_, carry):
        theta, opt_state = carry
        with _optax_promotion():
            updates, opt_state = optimizer.update(gradient(theta), opt_state, theta)
        if moves is not None:
            updates = jnp.where(moves, updates, 0)
        return optax.apply_updates(theta, updates), opt_state

    def advance(carry, k_save):
        # `fori_loop` with traced bounds is a while loop: vmappable, and memory stays
        # that of one state however many steps lie between two save times.
        state, k = carry
        state = jax.lax.fori_loop(k, k_save, step, state)
        saved = observe(state[0], unravel, loss_of, observables)
        return (state, k_save), saved

    with _optax_promotion():
        opt_state = optimizer.init(theta0)
    carry = ((theta0, opt_state), jnp.zeros((), jnp.int32))
    (state, k), saved = jax.lax.scan(advance, carry, save_steps)
    theta_end = jax.lax.fori_loop(k, num_steps, step, state)[0]
    finite = jnp.all(jnp.isfinite(theta_end)) & jnp.isfinite(loss_of(theta_end))
    status = jnp.where(finite, Status.SUCCESS, Status.NONFINITE).astype(jnp.int32)
    steps = jnp.asarray(num_steps)
    return assemble(
        unravel,
        theta_end,
        # The times the saved states belong to: step k is time kη.
        save_steps.astype(ts.dtype) * learning_rate,
        saved,
        loss_of=loss_of,
        t_stop=num_steps * learning_rate,
        num_steps=steps,
        num_accepted_steps=steps,
        num_rejected_steps=jnp.zeros_like(steps),
        num_evaluations=steps,
        phase_steps=steps[None],
        status=status,
        stop_reason=jnp.where(finite, StopReason.T1, StopReason.FAILED).astype(jnp.int32),
    )


def _optax_promotion():
    """JAX's standard dtype promotion while Optax's own arithmetic is traced: Adam's bias
    correction raises a Python float to an int32 step count, which a caller running with
    strict promotion (as gradflow's test suite does) would otherwise be refused."""
    return jax.numpy_dtype_promotion("standard")


def _net_sq_norm(net: TwoLayerNet) -> Array:
    """$\\|\\theta\\|^2$ of a net, keeping any leading (seed, time) axes."""
    outer = (-2, -1) if net.output_shape else -1
    out = jnp.sum(net.a**2, axis=outer) + jnp.sum(net.W**2, axis=(-2, -1))
    return out if net.b is None else out + jnp.sum(net.b**2, axis=-1)


def distance_to_flow(other: Solution, flow: Solution) -> Float[Array, "... T"]:
    """Relative distance $\\|\\theta_{\\text{other}}(t) - \\theta_{\\text{flow}}(t)\\| /
    \\|\\theta_{\\text{flow}}(t)\\|$ at the common save times: where gradient descent (or
    any other solution) departs from the flow. Works on ensembles too."""
    if np.shape(other.ts) != np.shape(flow.ts) or not np.allclose(
        np.asarray(other.ts), np.asarray(flow.ts)
    ):
        raise ValueError(
            "`other` and `flow` must be saved at the same `ts`. Gradient descent saves "
            "at multiples of its learning rate (its `ts` are the times kη of its saved "
            "states): pass those to the flow, `gradient_flow(..., ts=descent.ts)`, or "
            "choose save times that are multiples of the learning rate."
        )
    diff = jax.tree_util.tree_map(lambda p, q: p - q, other.nets, flow.nets)
    return jnp.sqrt(_net_sq_norm(diff) / _net_sq_norm(flow.nets))
