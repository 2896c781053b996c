"""The options of a flow solve: built and checked once, at trace time, then passed whole
through every driver (`gradient_flow`, `piecewise_flow`, the refilling ensemble)."""

import difflib
import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from ._coordinates import AbstractCoordinates, ScaleFree
from ._escape import escape_order
from ._loss import Reduction
from ._misc import (
    all_concrete,
    check_positive,
    check_positive_int,
    check_reduction,
    is_traced,
)
from ._network import TwoLayerNet
from ._solver import AbstractPhasedSolver, default_solver, phases_of, Unrolled
from ._trainable import check_trainable, frozen_of
from ._validate import check_problem, check_times


Observables = Mapping[str, Callable[[TwoLayerNet], PyTree[Array]]]
Kinks = Literal["exact", "smooth"]
Solver = dfx.AbstractAdaptiveSolver | AbstractPhasedSolver

# Names `piecewise_flow` adds to `Solution.observables`.
PIECEWISE_OBSERVABLES = ("events", "num_pinned", "num_crossings")


class FlowOptions(eqx.Module):
    """Every option of one flow solve, as `flow_options` checked and completed them.

    The numbers are arrays of the data's dtype, traced by `jit` (a new `t1` or `rtol`
    does not recompile); everything else is static and part of the compiled program's
    identity (a new `reduction`, solver, observable or `max_steps` compiles anew).
    See `gradient_flow` for the meaning of each.
    """

    t1: Float[Array, ""]
    ts: Float[Array, " T"]
    rtol: Float[Array, ""]
    dtmin: Float[Array, ""]
    loss_tol: Float[Array, ""] | None
    stationarity_tol: Float[Array, ""] | None
    solver: Solver
    coordinates: AbstractCoordinates
    observables: dict[str, Callable]
    # An extra term `penalty_weight * penalty(net)` of the loss, or None.
    penalty: Callable[[TwoLayerNet], Float[Array, ""]] | None
    penalty_weight: Float[Array, ""]
    reduction: Reduction = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    max_events: int = eqx.field(static=True)
    # The order of the linear escape's neglected terms; 0 where there is no jump.
    escape_order: int = eqx.field(static=True)
    # Whether the exact event-driven flow of `piecewise_flow` runs (kinked activation
    # and `kinks="exact"`).
    piecewise: bool = eqx.field(static=True)
    # The parameters that move, in `ravel_net`'s order (every one by default).
    trainable: tuple[str, ...] = eqx.field(static=True, default=("a", "W", "b"))


def runs_piecewise(net: TwoLayerNet, kinks: Kinks, trainable: Sequence[str] | None = None) -> bool:
    """Whether `gradient_flow` runs the exact, event-driven flow of `piecewise_flow`: an
    activation with kinks, `kinks="exact"`, and a hidden layer that moves. With `W` and
    `b` frozen no breakplane moves, nothing crosses, and the flow (linear least squares
    in `a`) is smooth: the smooth driver integrates it exactly."""
    hidden_moves = any(name in check_trainable(net, trainable) for name in ("W", "b"))
    return kinks == "exact" and not net.activation.is_smooth and hidden_moves


def flow_options(
    net: TwoLayerNet,
    x,
    y,
    weights,
    *,
    t1,
    ts=None,
    reduction: Reduction = "mean",
    rtol: float = 1e-10,
    solver: Solver | None = None,
    coordinates: AbstractCoordinates = ScaleFree(),
    loss_tol: float | None = None,
    stationarity_tol: float | None = None,
    observables: Observables | None = None,
    max_steps: int = 100_000,
    max_events: int = 4096,
    dtmin: float = 1e-12,
    linear_escape: bool = True,
    kinks: Kinks = "exact",
    penalty: Callable[[TwoLayerNet], Float[Array, ""]] | None = None,
    penalty_weight: float | Float[Array, ""] = 1.0,
    trainable: Sequence[str] | None = None,
) -> tuple[tuple, FlowOptions]:
    """Checks one seed's problem and the options of its solve, at trace time, and fills
    in the defaults that depend on the net (the solver, the escape).

    **Returns:** `((x, y, weights), options)`: the data as arrays and a `FlowOptions`.
    """
    x, y, weights = check_problem(net, x, y, weights)
    t1, ts = check_times(t1, ts, x.dtype)
    check_positive("rtol", rtol)
    _check_rtol_resolvable(rtol, x.dtype)
    check_positive("dtmin", dtmin)
    check_positive("loss_tol", loss_tol, allow_none=True)
    check_positive("stationarity_tol", stationarity_tol, allow_none=True)
    check_reduction(reduction)
    check_positive_int("max_steps", max_steps)
    check_positive_int("max_events", max_events)
    if not isinstance(coordinates, AbstractCoordinates):
        raise TypeError("`coordinates` must be an `AbstractCoordinates`, e.g. `ScaleFree()`.")
    if solver is not None and not isinstance(solver, Solver):
        raise TypeError(
            "`solver` must be an adaptive Diffrax solver such as `diffrax.Tsit5()` or "
            "`gradflow.Rodas5P()`, a `gradflow.TwoPhase`, or None for the default; got "
            f"{type(solver).__name__}."
        )
    if kinks not in ("exact", "smooth"):
        raise ValueError(f"`kinks` must be 'exact' or 'smooth', got {kinks!r}.")
    observables = dict(observables or {})
    _check_penalty(penalty, penalty_weight)
    trainable = check_trainable(net, trainable)
    frozen = frozen_of(net, trainable)
    piecewise = runs_piecewise(net, kinks, trainable)
    if piecewise and frozen:
        raise ValueError(
            f"`trainable`={trainable} is not supported by the exact integrator for the kinks "
            f"of {type(net.activation).__name__} (its events move every parameter). Freeze "
            "the whole hidden layer, `trainable=('a',)`: nothing then crosses a kink and "
            "the flow, smooth, runs exactly on the smooth driver. Or pass `kinks='smooth'`."
        )
    if piecewise and penalty is not None:
        raise ValueError(
            "`penalty` is not supported by the exact integrator for the kinks of "
            f"{type(net.activation).__name__} (its field and events are those of the squared "
            "loss alone). Pass `kinks='smooth'` to add a penalty to a kinked net's loss."
        )
    if piecewise:
        _check_piecewise(net, coordinates, observables)
        solver = _stepper_between_kinks(solver)
    else:
        _check_scale_free(net, coordinates, frozen)
        solver = default_solver(net) if solver is None else solver
    as_array = lambda v: None if v is None else jnp.asarray(v, x.dtype)  # noqa: E731
    options = FlowOptions(
        t1=t1,
        ts=ts,
        rtol=as_array(rtol),
        dtmin=as_array(dtmin),
        loss_tol=as_array(loss_tol),
        stationarity_tol=as_array(stationarity_tol),
        solver=solver,
        coordinates=coordinates,
        observables=observables,
        penalty=penalty,
        penalty_weight=jnp.asarray(penalty_weight, x.dtype),
        reduction=reduction,
        max_steps=max_steps,
        max_events=max_events,
        # The escape's closed form is that of the squared loss alone, every layer moving.
        escape_order=(
            escape_order(net)
            if linear_escape and not piecewise and penalty is None and not frozen
            else 0
        ),
        piecewise=piecewise,
        trainable=trainable,
    )
    return (x, y, weights), options


# The smallest `rtol` a dtype can honour: a hundred ulps of relative error per step.
_RTOL_FLOOR_ULPS = 100


def _check_rtol_resolvable(rtol, dtype) -> None:
    if is_traced(rtol):
        return
    floor = _RTOL_FLOOR_ULPS * float(jnp.finfo(dtype).eps)
    if float(rtol) < floor:
        raise ValueError(
            f"`rtol` = {float(rtol):.0e} asks for more digits than {jnp.dtype(dtype).name} "
            f"holds (at most about {floor:.0e} per step). Use float64 data and weights "
            "(gradflow's default), or pass an `rtol` of at least that."
        )


def describe(options: FlowOptions, data: tuple) -> tuple[tuple[str, str], ...]:
    """How a solution was made, as `(name, value)` strings for a stored result's
    attributes: the options, the package versions and a fingerprint of the data."""
    import diffrax
    import equinox
    import jax

    from . import __version__

    def number(value):
        if value is None:
            return "none"
        return "traced" if is_traced(value) else repr(np.asarray(value).tolist())

    return (
        ("t1", number(options.t1)),
        ("rtol", number(options.rtol)),
        ("dtmin", number(options.dtmin)),
        ("loss_tol", number(options.loss_tol)),
        ("stationarity_tol", number(options.stationarity_tol)),
        ("reduction", options.reduction),
        ("solver", repr(options.solver)),
        ("coordinates", repr(options.coordinates)),
        ("observables", ", ".join(sorted(options.observables)) or "none"),
        ("trainable", ", ".join(options.trainable)),
        ("penalty", _name(options.penalty)),
        ("penalty_weight", number(options.penalty_weight) if options.penalty else "none"),
        ("max_steps", str(options.max_steps)),
        ("exact_kinks", str(options.piecewise)),
        ("linear_escape_order", str(options.escape_order)),
        ("data_sha256", data_fingerprint(data)),
        (
            "versions",
            f"gradflow {__version__}, jax {jax.__version__}, equinox {equinox.__version__}, "
            f"diffrax {diffrax.__version__}",
        ),
    )


def _name(function: Callable | None) -> str:
    if function is None:
        return "none"
    return getattr(function, "__qualname__", None) or repr(function)


def data_fingerprint(data: tuple) -> str:
    """The first 16 hex digits of a SHA-256 over the data's arrays (`"traced"` inside
    `jit`/`vmap`, where the values are not known)."""
    leaves = [leaf for leaf in data if leaf is not None]
    if any(is_traced(leaf) for leaf in leaves):
        return "traced"
    digest = hashlib.sha256()
    for leaf in leaves:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def check_flow_kwargs(caller: str, flow_kwargs: dict) -> None:
    """Refuses a keyword that is not an option of `gradient_flow`, naming `caller` (the
    function the user called) rather than the internal one it would reach."""
    known = [
        name
        for name, parameter in inspect.signature(flow_options).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for name in flow_kwargs:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise TypeError(
                f"`{caller}` got an unknown option `{name}`.{hint} It takes the options of "
                f"`gradient_flow`: {', '.join(f'`{k}`' for k in known)}."
            )


def _check_penalty(penalty, penalty_weight) -> None:
    if penalty is not None and not callable(penalty):
        raise TypeError(
            "`penalty` must be a function of the net returning a scalar, e.g. "
            "`gradflow.radon.radon_tv_norm`; got "
            f"{type(penalty).__name__}."
        )
    if not is_traced(penalty_weight):
        weight = np.asarray(penalty_weight)
        if weight.shape != () or not np.isfinite(weight) or weight < 0:
            raise ValueError(
                f"`penalty_weight` must be a finite scalar >= 0, got {penalty_weight!r}."
            )


def _check_scale_free(
    net: TwoLayerNet, coordinates: AbstractCoordinates, frozen: tuple[str, ...] = ()
) -> None:
    if isinstance(coordinates, ScaleFree) and coordinates.layerwise and all_concrete(net):
        for name in ("a", "W"):
            # NumPy: inside a `jit` trace, jnp would trace even a closed-over constant.
            if not np.any(np.asarray(getattr(net, name)) != 0):
                # The kernel regime (a frozen random hidden layer, `a` from 0) is the
                # common way here: one radius for all of θ is then set by the frozen layer.
                where = " (e.g. `a = 0` under a frozen hidden layer)" if frozen else ""
                raise ValueError(
                    f"`net.{name}` is all zero, so its layer has no scale for "
                    f"`ScaleFree(layerwise=True)` to be relative to{where}. Pass "
                    "`coordinates=gradflow.ScaleFree(layerwise=False)` (one radius for "
                    "all of θ) or `coordinates=gradflow.Cartesian(atol=...)`."
                )


def _check_piecewise(net, coordinates, observables) -> None:
    if coordinates != ScaleFree():
        raise ValueError(
            "`coordinates` not supported by the exact integrator for the kinks of "
            f"{type(net.activation).__name__}. Drop it, or pass `kinks='smooth'` to step over "
            "the kinks with the smooth solver."
        )
    clash = sorted(set(observables) & set(PIECEWISE_OBSERVABLES))
    if clash:
        raise ValueError(
            f"`observables` uses the reserved name(s) {clash}: `piecewise_flow` records "
            f"{PIECEWISE_OBSERVABLES} itself. Rename yours."
        )


def _stepper_between_kinks(solver: Solver | None) -> dfx.AbstractAdaptiveSolver:
    """The explicit solver that the exact flow with kinks steps with between its events:
    Tsit5 by default, the first phase of a phased solver; a Diffrax method runs as
    `Unrolled(method)` (the same method and steps), whose step costs its field evaluations
    and little more: 1.5 ms against Diffrax's 2.0 ms (six fields of 0.23 ms) at n = 2048 in
    `benchmarks/relu_scaling.py`, where every event costs a step."""
    if solver is None:
        return Unrolled(dfx.Tsit5())
    solver = phases_of(solver)[0].solver
    explicit = isinstance(solver, dfx.AbstractERK | Unrolled)
    if not explicit or getattr(solver, "tableau", None) is None:
        raise TypeError(
            "`solver` must be an explicit Runge–Kutta Diffrax solver with an embedded error "
            f"estimate, such as `diffrax.Tsit5()` or `gradflow.Unrolled(diffrax.Tsit5())`, "
            f"got {type(solver).__name__}."
        )
    if getattr(solver.tableau, "b_error", None) is None:
        raise TypeError(f"`solver` ({type(solver).__name__}) has no error estimate.")
    return solver if isinstance(solver, Unrolled) else Unrolled(solver)
