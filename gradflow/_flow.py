from collections.abc import Callable, Mapping
from typing import Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PyTree

from ._coordinates import AbstractCoordinates, ScaleFree
from ._escape import escape_order, LinearEscape
from ._loss import Reduction, squared_loss
from ._misc import all_concrete, check_positive, layer_sizes, ravel_net
from ._network import TwoLayerNet
from ._piecewise import piecewise_flow
from ._solution import assemble, observe, Solution
from ._status import Status, StopReason
from ._validate import check_problem, check_times


Observables = Mapping[str, Callable[[TwoLayerNet], PyTree[Array]]]


def gradient_flow(
    net: TwoLayerNet,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n"],
    *,
    t1: float | Float[ArrayLike, ""],
    ts: Float[ArrayLike, " T"] | None = None,
    weights: Float[ArrayLike, " n"] | None = None,
    reduction: Reduction = "mean",
    rtol: float = 1e-10,
    solver: dfx.AbstractAdaptiveSolver = dfx.Tsit5(),
    coordinates: AbstractCoordinates = ScaleFree(),
    loss_tol: float | None = None,
    stationarity_tol: float | None = None,
    observables: Observables | None = None,
    max_steps: int = 100_000,
    dtmin: float = 1e-12,
    linear_escape: bool = True,
    kinks: Literal["exact", "smooth"] = "exact",
) -> Solution:
    """Integrates the gradient flow $\\dot\\theta = -\\nabla L(\\theta)$ of a two-layer net.

    $L$ is the squared loss of `squared_loss(net, x, y, weights, reduction)`. The
    solve is compiled once per problem structure and works unchanged under
    `jax.jit` and `jax.vmap` (over nets, data, `t1`, tolerances, ...).

    **Arguments:**

    - `net`: the initial network $\\theta_0$.
    - `x`, `y`: inputs `(n, d)` and targets `(n,)`, same dtype as `net`.
    - `t1`: final time.
    - `ts`: save times in `[0, t1]` (e.g. `gradflow.log_times`); default `[0, t1]`.
      Only these are stored: memory does not grow with the number of steps.
    - `weights`: per-sample weights; zero masks a (padded) sample out.
    - `reduction`: `"mean"` ($\\tfrac12$·mean) or `"sum"` ($\\tfrac12$·sum).
    - `rtol`: local error per step relative to $\\|\\theta\\|$ (see `ScaleFree`). The
      default 1e-10 reaches ~1e-9 global relative error on the reference problems
      of the test-suite at every init scale from 1e-2 to 1e-20.
    - `solver`: any adaptive Diffrax solver.
    - `coordinates`: `ScaleFree()` (default) or `Cartesian(atol=...)`.
    - `loss_tol`: stop once the loss is below this.
    - `stationarity_tol`: stop once $\\|\\nabla L(\\theta)\\| \\le$ `stationarity_tol`
      $\\cdot \\|\\theta\\|$. The ratio is scale-free: on the plateau at the start of a
      tiny-init run both sides shrink with $\\theta$, and the ratio stays near the
      linearised growth rate, so the rule does not fire there. It fires at any
      approximately stationary point away from the origin, saddles included.
    - `observables`: `{name: fn(net)}` evaluated at `ts`.
    - `max_steps`: solver step budget; a run that exhausts it ends with status
      `MAX_STEPS_REACHED` and its last state, never an exception.
    - `dtmin`: the smallest step, in units of the initial time scale
      $1/\\max(1, \\|\\dot y(0)\\|_\\infty)$ of the ODE state $y$. A run whose step would
      shrink below it ends with status `SOLVER_FAILURE` (or `NONFINITE`). Why: a seed
      whose gradient turns NaN has every step rejected, and without a floor it would
      burn all `max_steps` iterations, holding up every other seed of its vmapped
      batch. Crossing a kink of ReLU needs steps of about `rtol`, far above 1e-12.
    - `linear_escape`: jump the linear phase near the origin with its closed form
      (smooth $\\sigma$ with $\\sigma(0) = 0 \\ne \\sigma'(0)$ only; ignored otherwise),
      handing over to the solver once the neglected nonlinearity would contribute a
      relative error of `rtol`. The cost of a run then no longer grows with
      $\\log(1/\\varepsilon)$. See `gradflow._escape`.
    - `kinks`: for an activation with kinks (ReLU, leaky ReLU, ...), `"exact"` runs
      `gradflow.piecewise_flow`, which locates every breakplane crossing and slides
      along pinned data points (the Filippov flow); `"smooth"` steps over the kinks as
      if the field were smooth, which chatters and stalls once a breakplane pins a
      data point. Ignored for smooth activations. The exact integrator has no stop
      rules and no `coordinates` yet.

    **Returns:** a `Solution`.
    """
    x, y, weights = check_problem(net, x, y, weights)
    t1, ts = check_times(t1, ts, x.dtype)
    check_positive("rtol", rtol)
    check_positive("dtmin", dtmin)
    check_positive("loss_tol", loss_tol, allow_none=True)
    check_positive("stationarity_tol", stationarity_tol, allow_none=True)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"`reduction` must be 'mean' or 'sum', got {reduction!r}.")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}.")
    if not isinstance(coordinates, AbstractCoordinates):
        raise TypeError("`coordinates` must be an `AbstractCoordinates`, e.g. `ScaleFree()`.")
    if isinstance(coordinates, ScaleFree) and coordinates.layerwise and all_concrete(net):
        for name in ("a", "W"):
            if not jnp.any(getattr(net, name) != 0):
                raise ValueError(
                    f"`net.{name}` is all zero, so its layer has no scale for "
                    "`ScaleFree(layerwise=True)` to be relative to. Pass "
                    "`coordinates=gradflow.ScaleFree(layerwise=False)`."
                )
    if kinks not in ("exact", "smooth"):
        raise ValueError(f"`kinks` must be 'exact' or 'smooth', got {kinks!r}.")
    if kinks == "exact" and not net.activation.is_smooth:
        unsupported = [
            name
            for name, given in (
                ("loss_tol", loss_tol is not None),
                ("stationarity_tol", stationarity_tol is not None),
                ("coordinates", coordinates != ScaleFree()),
            )
            if given
        ]
        if unsupported:
            raise ValueError(
                f"{', '.join(f'`{name}`' for name in unsupported)} not supported by the exact "
                f"integrator for the kinks of {type(net.activation).__name__}. Drop them, or "
                "pass `kinks='smooth'` to step over the kinks with the smooth solver."
            )
        return piecewise_flow(
            net,
            x,
            y,
            t1=t1,
            ts=ts,
            weights=weights,
            reduction=reduction,
            rtol=rtol,
            solver=solver,
            observables=observables,
            max_steps=max_steps,
            dtmin=dtmin,
        )
    dtype = x.dtype
    as_array = lambda v: None if v is None else jnp.asarray(v, dtype)  # noqa: E731
    return _gradient_flow(
        net,
        x,
        y,
        weights,
        t1,
        ts,
        as_array(rtol),
        as_array(loss_tol),
        as_array(stationarity_tol),
        as_array(dtmin),
        reduction=reduction,
        solver=solver,
        coordinates=coordinates,
        observables=dict(observables or {}),
        max_steps=max_steps,
        escape_order=escape_order(net) if linear_escape else 0,
    )


def evaluations_per_step(solver) -> tuple[int, int] | None:
    """`(per step, at start)` vector-field evaluations of an explicit Runge–Kutta solver.

    FSAL methods reuse their last stage as the next step's first, so only the first
    step evaluates $f(y_0)$ as well. Diffrax (0.7) spends no evaluation on choosing
    `dt0`: its initial-step heuristic is skipped for the direction-wrapped terms of
    `diffeqsolve`, which starts from `dt0 = 0.01`. Measured with a counting vector
    field in `tests/test_flow_properties.py`; the count is exact unless the very first
    step of an FSAL method is rejected, each such retry evaluating $f(y_0)$ once more.
    """
    tableau = getattr(solver, "tableau", None)
    if tableau is None or not hasattr(tableau, "c"):
        return None
    stages = len(tableau.c) + 1
    return stages - int(tableau.fsal), int(tableau.fsal)


@eqx.filter_jit
def _gradient_flow(
    net,
    x,
    y,
    weights,
    t1,
    ts,
    rtol,
    loss_tol,
    stationarity_tol,
    dtmin,
    *,
    reduction,
    solver,
    coordinates,
    observables,
    max_steps,
    escape_order,
):
    theta0, unravel = ravel_net(net)
    layers = layer_sizes(net)

    def loss_of(theta):
        return squared_loss(unravel(theta), x, y, weights, reduction)

    gradient = jax.grad(loss_of)

    def save(t, state, args):
        return observe(coordinates.to_params(state, layers), unravel, loss_of, observables)

    conditions = {}
    if loss_tol is not None:
        conditions["loss"] = lambda t, s, args, **kw: (
            loss_of(coordinates.to_params(s, layers)) < loss_tol
        )

    if stationarity_tol is not None:

        def stationary(t, state, args, **kwargs):
            theta = coordinates.to_params(state, layers)
            grad_norm = jnp.linalg.norm(gradient(theta))
            return grad_norm <= stationarity_tol * jnp.linalg.norm(theta)

        conditions["stationary"] = stationary

    field = coordinates.vector_field(gradient, layers)
    t0 = jnp.zeros_like(t1)
    if escape_order:
        escape = LinearEscape(
            net, escape_order, x, y, weights, reduction, gradient, unravel, rtol, t1
        )
        t0 = escape.t_handover
        theta0 = jnp.where(t0 > 0, escape.params(t0), theta0)
    y0 = coordinates.to_state(theta0, layers)
    # The initial time scale: 1 for a flow that starts slowly (σ(0) = 0, where ∇L ∝ θ
    # near 0), but as small as ε/‖∇L‖ when ∇L(0) ≠ 0 (σ(0) ≠ 0, e.g. sinc at ε = 1e-20,
    # whose outer layer leaves the origin at a relative rate 1e20). The first step and
    # `dtmin` are measured in it, so neither a fast start fails at the floor nor a slow
    # one pays for a tiny first step.
    rate = jnp.max(
        jnp.stack([jnp.max(jnp.abs(v)) for v in jax.tree_util.tree_leaves(field(t0, y0, None))])
    )
    time_unit = jnp.where(jnp.isfinite(rate), 1 / jnp.maximum(rate, 1), 1)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(field),
        solver,
        t0=t0,
        t1=t1,
        dt0=0.01 * time_unit,
        y0=y0,
        # Save times inside the jumped phase are filled in from the closed form below.
        saveat=dfx.SaveAt(
            subs=[dfx.SubSaveAt(t1=True), dfx.SubSaveAt(ts=jnp.maximum(ts, t0), fn=save)]
        ),
        stepsize_controller=coordinates.controller(rtol, dtmin * time_unit),
        event=dfx.Event(conditions) if conditions else None,
        max_steps=max_steps,
        throw=False,
    )
    final, saved = sol.ys
    if escape_order:
        early = jax.vmap(lambda t: observe(escape.params(t), unravel, loss_of, observables))(ts)
        saved = jax.tree_util.tree_map(
            lambda lin, ode: jnp.where((ts < t0).reshape((-1,) + (1,) * (lin.ndim - 1)), lin, ode),
            early,
            saved,
        )
    t_stop = sol.ts[0][-1]
    theta_end = coordinates.to_params(jax.tree_util.tree_map(lambda leaf: leaf[-1], final), layers)
    loss_end = loss_of(theta_end)

    reached = ts <= t_stop
    saved = jax.tree_util.tree_map(
        lambda v: jnp.where(reached.reshape((-1,) + (1,) * (v.ndim - 1)), v, jnp.nan), saved
    )

    ok = (sol.result == dfx.RESULTS.successful) | (sol.result == dfx.RESULTS.event_occurred)
    status = jnp.where(
        ok,
        Status.SUCCESS,
        jnp.where(
            sol.result == dfx.RESULTS.max_steps_reached,
            Status.MAX_STEPS_REACHED,
            Status.SOLVER_FAILURE,
        ),
    )
    finite = jnp.all(jnp.isfinite(theta_end)) & jnp.isfinite(loss_end)
    status = jnp.where(finite, status, Status.NONFINITE).astype(jnp.int32)

    stop_reason = jnp.asarray(StopReason.T1)
    if conditions:
        mask = sol.event_mask
        event = sol.result == dfx.RESULTS.event_occurred
        if "stationary" in mask:
            stop_reason = jnp.where(event & mask["stationary"], StopReason.STATIONARY, stop_reason)
        if "loss" in mask:
            stop_reason = jnp.where(event & mask["loss"], StopReason.LOSS_TOLERANCE, stop_reason)
    stop_reason = jnp.where(status == Status.SUCCESS, stop_reason, StopReason.FAILED)

    num_steps = sol.stats["num_steps"]
    counts = evaluations_per_step(solver)
    # +1: the evaluation that set `time_unit`; +1 more for the escape's defect probe.
    setup = 1 + (1 if escape_order else 0)
    num_evaluations = (
        jnp.asarray(-1) if counts is None else counts[0] * num_steps + counts[1] + setup
    )
    return assemble(
        unravel,
        theta_end,
        ts,
        saved,
        t_stop=t_stop,
        num_steps=num_steps,
        num_accepted_steps=sol.stats["num_accepted_steps"],
        num_rejected_steps=sol.stats["num_rejected_steps"],
        num_evaluations=num_evaluations,
        status=status,
        stop_reason=stop_reason.astype(jnp.int32),
    )
