"""One seed's flow problem, and the pieces of its solve that `gradient_flow` and the
refilling runner (`gradflow._refill`) share: the start (linear escape and initial time
scale), the stop rules, and the first step of a later phase. Both runs must agree step
for step, so each piece has one home."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PyTree

from ._coordinates import AbstractCoordinates
from ._escape import LinearEscape
from ._loss import Reduction, squared_loss
from ._misc import layer_sizes, ravel_net
from ._network import TwoLayerNet
from ._options import FlowOptions
from ._solution import observe
from ._trainable import freeze, PARAMETERS, trainable_mask


class FlowProblem(eqx.Module):
    """The loss of one seed's data as a function of the flat parameters $\\theta$ (as
    `ravel_net` lays them out), and $\\theta$ as the solver's state in `coordinates`."""

    net: TwoLayerNet
    x: Float[Array, "n d"]
    y: Float[Array, " n"]
    weights: Float[Array, " n"] | None
    reduction: Reduction = eqx.field(static=True)
    coordinates: AbstractCoordinates
    observables: dict[str, Callable]
    penalty: Callable[[TwoLayerNet], Float[Array, ""]] | None
    penalty_weight: Float[Array, ""]
    theta0: Float[Array, " P"]
    unravel: Callable[[Float[Array, " P"]], TwoLayerNet]
    layers: tuple[int, int] = eqx.field(static=True)
    # The parameters that move (see `gradflow._trainable`); the others keep `net`'s values.
    trainable: tuple[str, ...] = eqx.field(static=True)

    @classmethod
    def of(cls, net: TwoLayerNet, data: tuple, options: FlowOptions) -> "FlowProblem":
        """The problem of `net` on `data = (x, y, weights)` under `options`."""
        x, y, weights = data
        return cls(
            net, x, y, weights, reduction=options.reduction,
            coordinates=options.coordinates, observables=options.observables,
            penalty=options.penalty, penalty_weight=options.penalty_weight,
            trainable=options.trainable,
        )  # fmt: skip

    def __init__(
        self, net, x, y, weights, *, reduction, coordinates, observables, penalty=None,
        penalty_weight=1.0, trainable=PARAMETERS,
    ):  # fmt: skip
        self.net, self.x, self.y, self.weights = net, x, y, weights
        self.reduction = reduction
        self.coordinates = coordinates
        self.observables = observables
        self.penalty = penalty
        self.penalty_weight = jnp.asarray(penalty_weight, x.dtype)
        self.theta0, self.unravel = ravel_net(net)
        self.layers = layer_sizes(net)
        self.trainable = tuple(name for name in trainable if getattr(net, name) is not None)

    def loss(self, theta: Float[Array, " P"]) -> Float[Array, ""]:
        """The loss the flow descends: the squared loss, plus the weighted penalty. Frozen
        parameters enter at their initial values, with an exactly zero gradient."""
        net = freeze(self.unravel(theta), self.net, self.trainable)
        loss = squared_loss(net, self.x, self.y, self.weights, self.reduction)
        if self.penalty is None:
            return loss
        return loss + self.penalty_weight * self.penalty(net)

    def gradient(self, theta: Float[Array, " P"]) -> Float[Array, " P"]:
        return jax.grad(self.loss)(theta)

    @property
    def field(self) -> Callable:
        """The ODE right-hand side `f(t, state, args)`, $-\\nabla L$ in `coordinates`."""
        return self.coordinates.vector_field(self.gradient, self.layers)

    def to_state(self, theta: Float[Array, " P"]) -> PyTree[Array]:
        return self.coordinates.to_state(theta, self.layers)

    def to_params(self, state: PyTree[Array]) -> Float[Array, " P"]:
        theta = self.coordinates.to_params(state, self.layers)
        moves = trainable_mask(self.net, self.trainable)
        if moves is None:
            return theta
        # A frozen parameter's velocity is zero, but where coordinates share a radius
        # between moving and frozen parameters (`ScaleFree(layerwise=False)`, or `b`
        # trained under a frozen `W`) its state can drift by rounding; it is restored.
        return jnp.where(moves, theta, self.theta0)

    def observe(self, theta: Float[Array, " P"]) -> dict:
        """The record of a save time (see `gradflow._solution.observe`)."""
        return observe(theta, self.unravel, self.loss, self.observables)


def escape_of(problem: FlowProblem, order: int, rtol, t1) -> LinearEscape | None:
    """The closed form of the linear phase, or `None` where there is none to jump
    (`order` 0, see `escape_order`)."""
    if not order:
        return None
    p = problem
    return LinearEscape(
        p.net, order, p.x, p.y, p.weights, p.reduction, p.gradient, p.unravel, rtol, t1
    )


def start(problem: FlowProblem, escape: LinearEscape | None, t1):
    """Where the solver takes over: `(t0, y0, time_unit)`, with `t0 > 0` where `escape`
    jumped the linear phase."""
    t0 = jnp.zeros_like(t1)
    theta0 = problem.theta0
    if escape is not None:
        t0 = escape.t_handover
        theta0 = jnp.where(t0 > 0, escape.params(t0), theta0)
    y0 = problem.to_state(theta0)
    # The initial time scale: 1 for a flow that starts slowly (σ(0) = 0, where ∇L ∝ θ
    # near 0), but as small as ε/‖∇L‖ when ∇L(0) ≠ 0 (σ(0) ≠ 0, e.g. sinc at ε = 1e-20,
    # whose outer layer leaves the origin at a relative rate 1e20). The first step and
    # `dtmin` are measured in it, so neither a fast start fails at the floor nor a slow
    # one pays for a tiny first step.
    # In `ScaleFree` coordinates the state's rate of change is already relative to
    # the parameters' scale.
    rate = jnp.max(
        jnp.stack(
            [jnp.max(jnp.abs(v)) for v in jax.tree_util.tree_leaves(problem.field(t0, y0, None))]
        )
    )
    return t0, y0, time_unit(rate)


def time_unit(rate: Float[Array, ""]) -> Float[Array, ""]:
    """The initial time scale of a flow whose state starts changing at `rate` (relative
    to its size): $1/\\max(1, \\text{rate})$, and 1 where the rate is not finite. The
    first step and `dtmin` are measured in it, in every driver."""
    return jnp.where(jnp.isfinite(rate), 1 / jnp.maximum(rate, 1), 1)


def stop_rules(
    problem: FlowProblem, loss_tol, stationarity_tol, switch_tol=None
) -> dict[str, Callable[[PyTree[Array]], Bool[Array, ""]]]:
    """`{name: rule(state)}` for the stop rules that are set; a run ends once one holds.
    Diffrax orders them (and so picks the first that holds) by name. `switch_tol` adds
    the end of a phase of a phased solver (`Phase.switch_tol`), `"switch"`, which sorts
    last: a run that meets a user's rule at the same step stops rather than switches."""

    def stationary(tol):
        def rule(state):
            theta = problem.to_params(state)
            gradient_norm = jnp.linalg.norm(problem.gradient(theta))
            return gradient_norm <= tol * jnp.linalg.norm(theta)

        return rule

    rules = {}
    if loss_tol is not None:
        rules["loss"] = lambda state: problem.loss(problem.to_params(state)) < loss_tol
    if stationarity_tol is not None:
        rules["stationary"] = stationary(stationarity_tol)
    if switch_tol is not None:
        rules["switch"] = stationary(switch_tol)
    return rules


def next_phase_first_step(t_switch, t0, num_accepted_steps):
    """The first step of a phase after a switch: the previous phase's mean accepted step,
    from its start `t0` to the switch."""
    accepted = jnp.maximum(num_accepted_steps, 1).astype(t_switch.dtype)
    return (t_switch - t0) / accepted
