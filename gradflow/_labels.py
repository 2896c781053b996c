import jax
import numpy as np

from ._piecewise import EventLog
from ._solution import Solution
from ._status import Status, StopReason


def _xarray():
    try:
        import xarray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("Labelled results need xarray: `pip install 'gradflow[xarray]'`.") from e
    return xarray


_PARAM_DIMS = {"a": ("neuron",), "W": ("neuron", "feature"), "b": ("neuron",)}


def to_dataset(solution: Solution, grid: "dict[str, np.ndarray] | None" = None):
    """An ensemble `Solution` as an `xarray.Dataset`.

    `grid` maps dimension names to coordinates whose sizes multiply to the number
    of runs (C order), e.g. `{"n": sizes, "scale": scales, "seed": seeds}`; the
    default is one `seed` axis. Variables: `loss` and each observable over `time`,
    the final parameters `a` (over `neuron`, and `output` for a net with vector
    outputs), `W`, `b`, and the per-run `t_stop`, `final_loss`,
    `stationarity`, `status`, `stop_reason`, `num_steps`, `num_evaluations`,
    `phase_steps`. For exact flows with kinks, the event log as `event_*` variables
    over an `event` axis (see `EventLog`) and the totals `num_events`,
    `num_crossings`, `num_pins`. `attrs` carry the code meanings and the solution's
    `info` (options, versions, data fingerprint).
    """
    xr = _xarray()
    status = np.asarray(solution.status)
    if status.ndim != 1:
        raise ValueError("`solution` must be an ensemble: a leading run axis and no other.")
    runs = status.shape[0]
    grid = {"seed": np.arange(runs)} if grid is None else dict(grid)
    shape = tuple(len(v) for v in grid.values())
    if int(np.prod(shape)) != runs:
        raise ValueError(f"`grid` has {int(np.prod(shape))} points but there are {runs} runs.")
    dims = tuple(grid)

    def var(value, extra_dims):
        value = np.asarray(value)
        return dims + extra_dims, value.reshape(shape + value.shape[1:])

    data = {
        "loss": var(solution.loss, ("time",)),
        "t_stop": var(solution.t_stop, ()),
        "final_loss": var(solution.final_loss, ()),
        "stationarity": var(solution.stationarity, ()),
        "status": var(solution.status, ()),
        "stop_reason": var(solution.stop_reason, ()),
        "num_steps": var(solution.num_steps, ()),
        "num_evaluations": var(solution.num_evaluations, ()),
        "phase_steps": var(solution.phase_steps, ("phase",)),
    }
    param_dims = dict(_PARAM_DIMS)
    if solution.net.output_shape:
        param_dims["a"] = ("neuron", "output")
    for name, dims_p in param_dims.items():
        value = getattr(solution.net, name)
        if value is not None:
            data[name] = var(value, dims_p)
    for name, value in solution.observables.items():
        if isinstance(value, EventLog):
            data |= _event_table(value, var)
            continue
        leaves = jax.tree_util.tree_leaves(value)
        if len(leaves) != 1:
            continue  # only array-valued observables have an obvious labelling
        extra = tuple(f"{name}_dim{k}" for k in range(np.ndim(leaves[0]) - 2))
        data[name] = var(leaves[0], ("time",) + extra)
    coords = dict(grid) | {"time": np.asarray(solution.ts).reshape(runs, -1)[0]}
    attrs = {
        "status_codes": "; ".join(f"{c.value}={c.name.lower()}" for c in Status),
        "stop_reason_codes": "; ".join(f"{c.value}={c.name.lower()}" for c in StopReason),
        "activation": type(solution.net.activation).__name__,
    } | dict(solution.info)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _event_table(log: EventLog, var) -> dict:
    """The event log of exact flows with kinks as variables over `(runs..., event)`,
    trimmed to the longest log of any run (unused records are -1 / NaN), plus the
    per-run totals, which count events past `max_events` too."""
    used = int(np.max(np.asarray(log.num_events).clip(max=np.shape(log.neuron)[-1]), initial=0))
    table = {
        f"event_{name}": var(np.asarray(getattr(log, name))[:, :used], ("event",))
        for name in ("kind", "neuron", "point", "kink", "time_in", "time_out", "direction")
    }
    totals = {
        name: var(getattr(log, name), ()) for name in ("num_events", "num_crossings", "num_pins")
    }
    return table | totals
