from collections.abc import Callable, Sequence

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PyTree

from ._coordinates import AbstractCoordinates, ScaleFree
from ._loss import Reduction
from ._misc import select
from ._network import TwoLayerNet
from ._options import describe, flow_options, FlowOptions, Kinks, Observables, Solver
from ._piecewise import solve_piecewise
from ._problem import escape_of, FlowProblem, next_phase_first_step, start, stop_rules
from ._result import finish, per_save, STEP_COUNTS
from ._solution import Solution, warn_if_log_full
from ._solver import Phase, phases_of


def gradient_flow(
    net: TwoLayerNet,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *k"],
    *,
    t1: float | Float[ArrayLike, ""],
    ts: Float[ArrayLike, " T"] | None = None,
    weights: Float[ArrayLike, " n"] | None = None,
    reduction: Reduction = "mean",
    rtol: float = 1e-10,
    solver: Solver | None = None,
    coordinates: AbstractCoordinates = ScaleFree(),
    loss_tol: float | None = None,
    stationarity_tol: float | None = None,
    observables: Observables | None = None,
    max_steps: int = 100_000,
    dtmin: float = 1e-12,
    linear_escape: bool = True,
    kinks: Kinks = "exact",
    max_events: int = 4096,
    penalty: Callable[[TwoLayerNet], Float[Array, ""]] | None = None,
    penalty_weight: float | Float[ArrayLike, ""] = 1.0,
    trainable: Sequence[str] | None = None,
) -> Solution:
    """Integrates the gradient flow $\\dot\\theta = -\\nabla L(\\theta)$ of a two-layer net.

    $L$ is the squared loss of `squared_loss(net, x, y, weights, reduction)`, plus
    `penalty_weight * penalty(net)` where a `penalty` is given. The
    solve is compiled once per problem structure and works unchanged under
    `jax.jit` and `jax.vmap` (over nets, data, `t1`, tolerances, ...).

    **Arguments:**

    - `net`: the initial network $\\theta_0$.
    - `x`, `y`: inputs `(n, d)` and targets `(n,)` (`(n, k)` for a net with `a` of
      shape `(m, k)`), same dtype as `net`.
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
      at most 32 parameters, `TwoPhase(implicit=gradflow.Krylov())` (Rodas5P's systems
      solved matrix-free) for larger ones, and `diffrax.Tsit5()` between the events
      of the exact flow with kinks. The late phase of a flow is stiff: once the data
      are fitted, the Hessian's large eigenvalues cap an explicit method's step while
      the remaining motion is slow.
      On workload W1 the L-stable Rodas5P reaches $t = 10^8$ in 1.45x the steps it
      needs to $t = 400$ (`TwoPhase` 1.48x, at Tsit5's cost per step before the
      switch); Tsit5 needs 19x more to $t = 10^4$ and exhausts 50,000 steps before
      $10^6$. Past 32 parameters the dense $P \\times P$ factorisation per Rodas5P
      step costs more than `Krylov`'s products with the Hessian (`benchmarks/RESULTS.md`).
    - `coordinates`: `ScaleFree()` (default) or `Cartesian(atol=...)`.
    - `loss_tol`: stop once the loss is below this.
    - `stationarity_tol`: stop once $\\|\\nabla L(\\theta)\\| \\le$ `stationarity_tol`
      $\\cdot \\|\\theta\\|$. The ratio is scale-free: on the plateau at the start of a
      tiny-init run both sides shrink with $\\theta$, and the ratio stays near the
      linearised growth rate, so the rule does not fire there. It fires at any
      approximately stationary point away from the origin, saddles included — also
      where grown neurons sit beside neurons still of size ε: their pull on the
      gradient is ~ε, so with ε ≲ `stationarity_tol`·‖θ‖ the rule fires on a plateau
      they would still escape from, after a time ∝ log(1/ε). Choose it well below ε
      there (the adaptive-regime experiment's finding).
    - `observables`: `{name: fn(net)}` evaluated at `ts`.
    - `max_steps`: solver step budget, per phase of a phased solver such as
      `TwoPhase` (`Solution.phase_steps` gives the steps of each phase); a run that
      exhausts it ends with status `MAX_STEPS_REACHED` and its last state, never an
      exception.
    - `dtmin`: the smallest step, in units of the initial time scale
      $1/\\max(1, \\|\\dot y(0)\\|_\\infty)$ of the ODE state $y$. A run whose step would
      shrink below it ends with status `SOLVER_FAILURE` (or `NONFINITE`). Why: a seed
      whose gradient turns NaN has every step rejected, and without a floor it would
      burn all `max_steps` iterations, holding up every other seed of its vmapped
      batch. Crossing a kink of ReLU needs steps of about `rtol`, far above 1e-12.
    - `linear_escape`: jump the linear phase near the origin with its closed form
      (smooth $\\sigma$ with $\\sigma(0) = 0 \\ne \\sigma'(0)$, scalar or vector output;
      ignored otherwise),
      handing over to the solver once the neglected nonlinearity would contribute a
      relative error of `rtol`. The cost of a run then no longer grows with
      $\\log(1/\\varepsilon)$. See `gradflow._escape`.
    - `kinks`: for an activation with kinks (ReLU, leaky ReLU, ...), `"exact"` runs
      `gradflow.piecewise_flow`, which locates every breakplane crossing and slides
      along pinned data points (the Filippov flow); `"smooth"` steps over the kinks as
      if the field were smooth, which chatters and stalls once a breakplane pins a
      data point. Ignored for smooth activations. The exact integrator has no
      `coordinates` yet; its stop rules use the Filippov velocity for the gradient.
    - `max_events`: for the exact flow with kinks, the length of its event log. The flow
      is not limited by it: events past it are counted but not logged, and the call
      warns with the `max_events` that would keep them all (a fixed length, as the log
      lives in the compiled loop; a run that fills it is rerun by the user, not behind
      their back).
    - `penalty`, `penalty_weight`: an explicit regulariser $\\lambda R(\\theta)$ added
      to the loss, `penalty(net)` a differentiable scalar (e.g. one of
      `gradflow.radon`'s penalties; close over data it needs), $\\lambda$ =
      `penalty_weight` (traced: a sweep over it compiles once). The flow then descends
      the penalised loss, and `Solution.loss`, `final_loss` and `stationarity` are
      those of the penalised loss. The linear escape is not jumped (its closed form
      is the squared loss's), and the exact flow with kinks refuses a penalty (use
      `kinks="smooth"`).
    - `trainable`: the parameters that move, a tuple of names among `"a"`, `"W"`,
      `"b"`; default None, all of the net's. The others keep their initial values
      exactly (their component of $\nabla L$ is zero; the state keeps them, so
      ensembles, sweeps and results are laid out as usual). `trainable=("a",)` is the
      kernel regime of a frozen random hidden layer: linear least squares in $a$,
      which from $a = 0$ converges to the minimum-norm interpolant of the net's
      random-features kernel (`benchmarks/kernel_regime.py`). `stationarity`, the
      stop rule and `Solution.stationarity` then use the gradient in the trainable
      parameters. The linear escape is not jumped (its closed form moves every layer).
      From `a = 0` pass `coordinates=ScaleFree(layerwise=False)` or
      `Cartesian(atol=...)` (the default layerwise radius of an all-zero layer is
      undefined). For an activation with kinks, a frozen hidden layer (`W` and `b`)
      moves no kink, so the flow is smooth and runs on the smooth driver, exactly,
      whatever `kinks` says; the exact integrator refuses any other partial freeze
      (use `kinks="smooth"`).

    What recompiles: the numbers (`t1`, `ts` values, `rtol`, `dtmin`, `loss_tol`,
    `stationarity_tol`) and the arrays are traced, so new values reuse the compiled
    program (`penalty_weight` too); a new `reduction`, `solver`, `coordinates`,
    `observables` or `penalty` function, `trainable`,
    `max_steps`, `max_events`, array shape or dtype compiles anew (see `FlowOptions`).

    **Returns:** a `Solution`.
    """
    data, options = flow_options(
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
        max_events=max_events,
        dtmin=dtmin,
        linear_escape=linear_escape,
        kinks=kinks,
        penalty=penalty,
        penalty_weight=penalty_weight,
        trainable=trainable,
    )
    solve = solve_piecewise if options.piecewise else _gradient_flow
    return warn_if_log_full(solve(net, data, options).with_info(describe(options, data)))


class _Segment(eqx.Module):
    """Where one phase's `diffeqsolve` ended, and what it saved."""

    y: PyTree[Array]
    t_stop: Float[Array, ""]
    saved: PyTree[Array]
    result: dfx.RESULTS
    event_mask: dict[str, Bool[Array, ""]]
    steps: dict[str, Int[Array, ""]]

    def switched(self) -> Bool[Array, ""]:
        """Whether the phase ended at its switch rule. Diffrax marks only the first rule
        that holds, by name, and "switch" sorts last: a run that met a user's rule at
        the same step is not marked as switched."""
        if "switch" not in self.event_mask:
            return jnp.asarray(False)
        return (self.result == dfx.RESULTS.event_occurred) & self.event_mask["switch"]


@eqx.filter_jit
def _gradient_flow(net: TwoLayerNet, data: tuple, options: FlowOptions) -> Solution:
    problem = FlowProblem.of(net, data, options)
    t1 = options.t1
    escape = escape_of(problem, options.escape_order, options.rtol, t1)
    t0, y0, time_unit = start(problem, escape, t1)
    controller = options.coordinates.controller(options.rtol, options.dtmin * time_unit)
    first, *later = phases_of(options.solver)

    run = _solve_phase(problem, options, controller, first, t0, y0, 0.01 * time_unit)
    # The run so far, and the phase that ended last: a later phase starts where that
    # one switched; a run that did not switch enters it at t1 and takes no step there.
    segment, phase_start = run, t0
    phase_steps = [run.steps["num_steps"]]
    for phase in later:
        switched = segment.switched()
        t_switch = segment.t_stop
        segment = _solve_phase(
            problem, options, controller, phase,
            jnp.where(switched, t_switch, t1),
            segment.y,
            next_phase_first_step(t_switch, phase_start, segment.steps["num_accepted_steps"]),
        )  # fmt: skip
        phase_start = t_switch
        late = options.ts > jnp.where(switched, t_switch, jnp.inf)
        run = _Segment(
            y=select(switched, segment.y, run.y),
            t_stop=jnp.where(switched, segment.t_stop, run.t_stop),
            saved=jax.tree_util.tree_map(
                lambda new, old: jnp.where(per_save(late, new), new, old), segment.saved, run.saved
            ),
            result=dfx.RESULTS.where(switched, segment.result, run.result),
            event_mask={
                name: jnp.where(switched, segment.event_mask[name], held)
                for name, held in run.event_mask.items()
                if name != "switch"
            },
            steps={
                name: run.steps[name] + jnp.where(switched, segment.steps[name], 0)
                for name in STEP_COUNTS
            },
        )
        phase_steps.append(jnp.where(switched, segment.steps["num_steps"], 0))
    return finish(
        problem,
        escape,
        options.solver,
        options.ts,
        run.saved,
        t0=t0,
        y=run.y,
        t_stop=run.t_stop,
        result=run.result,
        event_mask=run.event_mask,
        phase_steps=phase_steps,
        num_accepted_steps=run.steps["num_accepted_steps"],
        num_rejected_steps=run.steps["num_rejected_steps"],
    )


def _solve_phase(
    problem: FlowProblem, options: FlowOptions, controller, phase: Phase, t_start, y_start, dt0
) -> _Segment:
    """One phase's `diffeqsolve` from `t_start` to `t1`, with the user's stop rules and
    the phase's switch."""
    rules = stop_rules(problem, options.loss_tol, options.stationarity_tol, phase.switch_tol)
    event = dfx.Event({name: _condition(rule) for name, rule in rules.items()})
    sol = dfx.diffeqsolve(
        dfx.ODETerm(problem.field),
        phase.solver,
        t0=t_start,
        t1=options.t1,
        dt0=dt0,
        y0=y_start,
        # Save times before the start (inside the jumped phase, or before a switch) are
        # filled in from elsewhere.
        saveat=dfx.SaveAt(
            subs=[
                dfx.SubSaveAt(t1=True),
                dfx.SubSaveAt(
                    ts=jnp.maximum(options.ts, t_start),
                    fn=lambda t, state, args: problem.observe(problem.to_params(state)),
                ),
            ]
        ),
        stepsize_controller=controller,
        event=event if rules else None,
        max_steps=options.max_steps,
        throw=False,
    )
    (final, saved), stats = sol.ys, sol.stats
    return _Segment(
        y=jax.tree_util.tree_map(lambda leaf: leaf[-1], final),
        t_stop=sol.ts[0][-1],
        saved=saved,
        result=sol.result,
        event_mask=sol.event_mask or {},
        steps={name: stats[name] for name in STEP_COUNTS},
    )


def _condition(rule: Callable) -> Callable:
    """A stop rule of the state as a Diffrax event condition, a function of `(t, y, args)`."""
    return lambda t, state, args, **kwargs: rule(state)
