"""The configuration of the adaptive-regime experiments (Sahs, Pyle, Anselmi & Patel,
arXiv:2503.10587, the adaptive part): data, nets, init scales, seeds, stop rules and the
tolerances of the cluster and pin measures."""

import math

import equinox as eqx
import numpy as np

from ..._misc import check_positive_int


# The three points of the 2-D example (a triangle around the origin) and generic targets
# (no two equal, so no symmetry of the data decides the outcome).
THREE_POINTS = ((-1.0, -0.5), (1.0, -0.5), (0.0, 1.0))
THREE_TARGETS = (1.0, -0.5, 0.75)
# The 1-D analogue: five uneven points of [-1, 1] and generic targets.
LINE_POINTS = (-1.0, -0.4, 0.1, 0.5, 1.0)
LINE_TARGETS = (0.6, -0.3, -0.5, -0.2, 0.4)
KINKED = ("relu", "leaky_relu")


def _check_number(name, value):
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")


class AdaptiveRegimeConfig(eqx.Module):
    """All settings of the adaptive-regime reproduction (defaults: the full run).

    **Nets.** Biased two-layer nets $f(x) = \\sum_k a_k \\varphi(w_k \\cdot x + b_k)$, every
    weight trained, drawn by `gradflow.random_net(..., distribution="sphere", bias=True)`:
    each neuron balanced ($a_k^2 = \\|w_k\\|^2 + b_k^2$) with norm $\\sqrt2\\,\\varepsilon$.
    Squared loss, `reduction="mean"`.

    **Examples.** The 3-point 2-D example (`points_2d`, `targets_2d`) and its 1-D analogue
    (`points_1d`, `targets_1d`), each with `width` neurons of `activation` at init scale
    `scale`, over `num_seeds` seeds.

    **Sweep.** Every activation of `sweep_activations` × width of `sweep_widths` × init
    scale of `sweep_scales`, `sweep_seeds` seeds each, on the 3-point 2-D example.

    **Flows.** Each run stops when the loss falls below `loss_tol` times its initial value
    ½·mean(y²) (fitted), when $\\|\\nabla L\\| \\le$ `stationarity_tol`$\\cdot\\|\\theta\\|$
    (stuck), or at `t1`; saved at `num_times` log-spaced times. Kinked activations run the
    exact Filippov flow (`kinks="exact"`, events logged up to `max_events`), smooth ones
    the default flow. `rtol`, `max_steps` as in `gradflow.gradient_flow`.

    **Measures.** `cluster_tol`: two breakplanes are neighbours when the sup over the data
    ball of the difference of their signed distances is at most `cluster_tol` times the
    ball's radius (see `breakplane_distance`); clusters are the connected components.
    `growth_floor`: a neuron counts as *grown* when $|a_k|\\,\\|(w_k, b_k)\\|$ is at least
    this fraction of the largest; response alignment is measured within the clusters of
    grown neurons at the end (`grown_alignment`). `pin_tol`: a breakplane passes through
    a data point when $|w_k\\cdot x_i + b_k - c| \\le$
    `pin_tol`$\\cdot\\|(w_k,b_k)\\|\\,\\|(x_i,1)\\|$
    (rounding level; used to read pins from a state).

    **Gradient descent check.** `gd_rates`: step sizes η of `gradient_descent` from the
    first seed of the 2-D example, every iterate saved up to that run's stop.

    **Loss slice.** `slice_points` × `slice_points` grid of one pinned neuron's
    (angle, offset) with every other weight fixed.
    """

    points_2d: tuple = THREE_POINTS
    targets_2d: tuple = THREE_TARGETS
    points_1d: tuple = LINE_POINTS
    targets_1d: tuple = LINE_TARGETS
    activation: str = "relu"
    width: int = 10
    scale: float = 1e-6
    num_seeds: int = 1024
    sweep_activations: tuple[str, ...] = ("relu", "leaky_relu", "tanh")
    sweep_widths: tuple[int, ...] = (4, 10, 20)
    sweep_scales: tuple[float, ...] = (1e-1, 1e-2, 1e-4, 1e-6, 1e-8, 1e-12)
    sweep_seeds: int = 32
    t1: float = 3e3
    num_times: int = 120
    loss_tol: float = 1e-10
    stationarity_tol: float = 1e-9
    rtol: float = 1e-10
    max_steps: int = 6000
    max_events: int = 256
    cluster_tol: float = 1e-2
    cluster_tols: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    growth_floor: float = 1e-3
    pin_tol: float = 1e-9
    gd_rates: tuple[float, ...] = (1e-2, 2.5e-3)
    slice_points: int = 161
    seed: int = 0

    def __check_init__(self):
        for name in ("width", "num_seeds", "sweep_seeds", "num_times", "max_steps",
                     "max_events", "slice_points"):  # fmt: skip
            check_positive_int(name, getattr(self, name))
        for name in ("scale", "t1", "loss_tol", "stationarity_tol", "rtol", "cluster_tol",
                     "growth_floor", "pin_tol"):  # fmt: skip
            _check_number(name, getattr(self, name))
        if self.num_times < 2:
            raise ValueError(f"`num_times` must be at least 2, got {self.num_times}.")
        if self.cluster_tol not in self.cluster_tols:
            raise ValueError(
                f"`cluster_tol` ({self.cluster_tol}) must be one of `cluster_tols` "
                f"{self.cluster_tols}: the headline tolerance is reported beside the others."
            )
        for name, points, targets, dim in (
            ("points_2d", self.points_2d, self.targets_2d, 2),
            ("points_1d", self.points_1d, self.targets_1d, None),
        ):
            x = np.asarray(points, np.float64)
            if dim is not None and (x.ndim != 2 or x.shape[1] != dim):
                raise ValueError(f"`{name}` must be a tuple of (x, y) pairs, got {points!r}.")
            if dim is None and x.ndim != 1:
                raise ValueError(f"`{name}` must be a tuple of numbers, got {points!r}.")
            if len(targets) != len(x) or len(x) < 2:
                raise ValueError(
                    f"`{name}` needs at least two points and one target each; got {len(x)} "
                    f"points and {len(targets)} targets."
                )
        for name in ("sweep_widths", "gd_rates", "sweep_scales", "sweep_activations"):
            if len(getattr(self, name)) == 0:
                raise ValueError(f"`{name}` must not be empty.")
        for m in self.sweep_widths:
            check_positive_int("sweep_widths", m)
        for value in self.sweep_scales + self.gd_rates + self.cluster_tols:
            _check_number("sweep_scales, gd_rates and cluster_tols entries", value)
        for activation in (self.activation,) + self.sweep_activations:
            _check_activation(activation)

    def data_2d(self):
        """`(x (n, 2), y (n,))` of the 2-D example."""
        return np.asarray(self.points_2d, np.float64), np.asarray(self.targets_2d, np.float64)

    def data_1d(self):
        """`(x (n, 1), y (n,))` of the 1-D analogue."""
        return (
            np.asarray(self.points_1d, np.float64)[:, None],
            np.asarray(self.targets_1d, np.float64),
        )


def _check_activation(name):
    import gradflow as gf

    if not isinstance(name, str):
        raise ValueError(f"activations are given by name, got {name!r}.")
    gf.get_activation(name)  # raises with the known names


def quick_config() -> AdaptiveRegimeConfig:
    """The CI size: the same code paths, few seeds, two widths, three scales."""
    return AdaptiveRegimeConfig(
        width=6,
        num_seeds=8,
        sweep_activations=("relu", "tanh"),
        sweep_widths=(6,),
        sweep_scales=(1e-2, 1e-6, 1e-12),
        sweep_seeds=4,
        num_times=60,
        gd_rates=(1e-2,),
        slice_points=61,
    )
