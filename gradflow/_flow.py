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
from ._problem import (
    finish,
    flow_options,
    FlowProblem,
    implicit_first_step,
    linear_escape,
    per_save,
    runs_piecewise,
    start,
    STEP_COUNTS,
    stop_rules,
)
from ._solution import Solution
from ._solver import TwoPhase


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
    - `solver`: any adaptive Diffrax solver, `gradflow.Rodas5P()`, `gradflow.TwoPhase()`
      (explicit until the flow turns stiff, implicit after) or `gradflow.Unrolled(...)`.
      Default: `TwoPhase()` (Tsit5 with its stages unrolled, then Rodas5P) for nets of
      at most 32 parameters, `diffrax.Tsit5()` for larger ones (and between the events
      of the exact flow with kinks). The late phase of a flow is stiff: once the data
      are fitted, the Hessian's large eigenvalues cap an explicit method's step while
      the remaining motion is slow.
      On workload W1 the L-stable Rodas5P reaches $t = 10^8$ in 1.45x the steps it
      needs to $t = 400$ (`TwoPhase` 1.48x, at Tsit5's cost per step before the
      switch); Tsit5 needs 19x more to $t = 10^4$ and exhausts 50,000 steps before
      $10^6$. The dense $P \\times P$ factorisation per Rodas5P step is what limits
      the default to small nets (`benchmarks/RESULTS.md`).
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
    if runs_piecewise(net, kinks):
        return piecewise_flow(
            net,
            x,
            y,
            t1=arrays["t1"],
            ts=arrays["ts"],
            weights=weights,
            reduction=reduction,
            rtol=rtol,
            solver=piecewise_solver(solver),
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
    controller = coordinates.controller(rtol, dtmin * time_unit)

    def solve(solver, t_start, y_start, dt0, rules):
        event = dfx.Event({name: _condition(rule) for name, rule in rules.items()})
        sol = dfx.diffeqsolve(
            dfx.ODETerm(problem.field),
            solver,
            t0=t_start,
            t1=t1,
            dt0=dt0,
            y0=y_start,
            # Save times before the start (inside the jumped phase, or before the switch of
            # a `TwoPhase` run) are filled in from elsewhere.
            saveat=dfx.SaveAt(
                subs=[
                    dfx.SubSaveAt(t1=True),
                    dfx.SubSaveAt(
                        ts=jnp.maximum(ts, t_start),
                        fn=lambda t, state, args: problem.observe(problem.to_params(state)),
                    ),
                ]
            ),
            stepsize_controller=controller,
            event=event if rules else None,
            max_steps=max_steps,
            throw=False,
        )
        (final, saved), stats = sol.ys, sol.stats
        end = jax.tree_util.tree_map(lambda leaf: leaf[-1], final)
        steps = {name: stats[name] for name in STEP_COUNTS}
        return end, sol.ts[0][-1], saved, sol.result, sol.event_mask or {}, steps

    dt0 = 0.01 * time_unit
    if not isinstance(solver, TwoPhase):
        y_end, t_stop, saved, result, mask, steps = solve(solver, t0, y0, dt0, rules)
        implicit_steps = None
    else:
        y_1, t_1, saved_1, result_1, mask_1, steps_1 = solve(
            solver.explicit,
            t0,
            y0,
            dt0,
            stop_rules(problem, loss_tol, stationarity_tol, solver.switch_tol),
        )
        # Diffrax marks only the first rule that holds, by name, and "switch" sorts last: a
        # run that met a user's rule at the same step is not marked as switched.
        switched = (result_1 == dfx.RESULTS.event_occurred) & mask_1["switch"]
        # The implicit phase from the switch, with the explicit phase's mean step to start;
        # a run that did not switch enters it at t1 and takes no step there.
        y_2, t_2, saved_2, result_2, mask_2, steps_2 = solve(
            solver.implicit,
            jnp.where(switched, t_1, t1),
            y_1,
            implicit_first_step(t_1, t0, steps_1["num_accepted_steps"]),
            rules,
        )
        pick = lambda a, b: jax.tree_util.tree_map(  # noqa: E731
            lambda u, v: jnp.where(switched, u, v), a, b
        )
        y_end, t_stop = pick((y_2, t_2), (y_1, t_1))
        result = dfx.RESULTS.where(switched, result_2, result_1)
        mask = {name: pick(mask_2[name], mask_1[name]) for name in rules}
        late = ts > jnp.where(switched, t_1, jnp.inf)
        saved = jax.tree_util.tree_map(
            lambda a, b: jnp.where(per_save(late, a), a, b), saved_2, saved_1
        )
        implicit_steps = jnp.where(switched, steps_2["num_steps"], 0)
        steps = {name: steps_1[name] + jnp.where(switched, steps_2[name], 0) for name in steps_1}
    return finish(
        problem,
        escape,
        solver,
        ts,
        saved,
        t0=t0,
        y=y_end,
        t_stop=t_stop,
        result=result,
        event_mask=mask,
        implicit_steps=implicit_steps,
        **steps,
    )


def piecewise_solver(solver):
    """The explicit solver that `piecewise_flow` steps between kinks with."""
    if solver is None:
        return dfx.Tsit5()
    return solver.explicit if isinstance(solver, TwoPhase) else solver


def _condition(rule):
    """A stop rule of the state as a Diffrax event condition, a function of `(t, y, args)`."""
    return lambda t, state, args, **kwargs: rule(state)
