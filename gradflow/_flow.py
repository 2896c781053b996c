from collections.abc import Callable, Mapping
from typing import Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PyTree

from ._coordinates import AbstractCoordinates, ScaleFree
from ._loss import Reduction
from ._network import TwoLayerNet
from ._piecewise import piecewise_flow
from ._problem import finish, flow_options, FlowProblem, linear_escape, start, stop_rules
from ._solution import Solution


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
    solver: dfx.AbstractAdaptiveSolver | None = None,
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
    - `solver`: any adaptive Diffrax solver, or `gradflow.Rodas5P()`. Default: `Rodas5P`
      for nets of at most 32 parameters, `diffrax.Tsit5()` for larger ones (and for the
      exact flow with kinks). The late phase of a flow is stiff: once the data are
      fitted, the Hessian's large eigenvalues cap an explicit method's step while the
      remaining motion is slow. Rodas5P (L-stable, exact Jacobian) reaches $t = 10^8$
      on workload W1 in 1.45x the steps it needs to $t = 400$; Tsit5 needs 19x more
      to $t = 10^4$ and exhausts 50,000 steps before $10^6$. Its dense $P \times P$
      factorisation per step is what limits it to small nets
      (`benchmarks/RESULTS.md`).
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
    (x, y, weights), arrays, statics = flow_options(
        net,
        x,
        y,
        weights,
        t1=t1,
        ts=ts,
        reduction=reduction,
        rtol=rtol,
        solver=solver,
        coordinates=coordinates,
        loss_tol=loss_tol,
        stationarity_tol=stationarity_tol,
        observables=observables,
        max_steps=max_steps,
        dtmin=dtmin,
        linear_escape=linear_escape,
        kinks=kinks,
    )
    if kinks == "exact" and not net.activation.is_smooth:
        return piecewise_flow(
            net,
            x,
            y,
            t1=arrays["t1"],
            ts=arrays["ts"],
            weights=weights,
            reduction=reduction,
            rtol=rtol,
            solver=dfx.Tsit5() if solver is None else solver,
            observables=observables,
            max_steps=max_steps,
            dtmin=dtmin,
        )
    return _gradient_flow(net, x, y, weights, **arrays, **statics)


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
    problem = FlowProblem(
        net, x, y, weights, reduction=reduction, coordinates=coordinates, observables=observables
    )
    escape = linear_escape(problem, escape_order, rtol, t1)
    t0, y0, time_unit = start(problem, escape, t1)
    rules = stop_rules(problem, loss_tol, stationarity_tol)
    event = dfx.Event({name: _condition(rule) for name, rule in rules.items()}) if rules else None
    sol = dfx.diffeqsolve(
        dfx.ODETerm(problem.field),
        solver,
        t0=t0,
        t1=t1,
        dt0=0.01 * time_unit,
        y0=y0,
        # Save times inside the jumped phase are filled in from the closed form by `finish`.
        saveat=dfx.SaveAt(
            subs=[
                dfx.SubSaveAt(t1=True),
                dfx.SubSaveAt(
                    ts=jnp.maximum(ts, t0),
                    fn=lambda t, state, args: problem.observe(problem.to_params(state)),
                ),
            ]
        ),
        stepsize_controller=coordinates.controller(rtol, dtmin * time_unit),
        event=event,
        max_steps=max_steps,
        throw=False,
    )
    final, saved = sol.ys
    return finish(
        problem,
        escape,
        solver,
        ts,
        saved,
        t0=t0,
        y=jax.tree_util.tree_map(lambda leaf: leaf[-1], final),
        t_stop=sol.ts[0][-1],
        result=sol.result,
        event_mask=sol.event_mask or {},
        num_steps=sol.stats["num_steps"],
        num_accepted_steps=sol.stats["num_accepted_steps"],
        num_rejected_steps=sol.stats["num_rejected_steps"],
    )


def _condition(rule):
    """A stop rule of the state as a Diffrax event condition, a function of `(t, y, args)`."""
    return lambda t, state, args, **kwargs: rule(state)
