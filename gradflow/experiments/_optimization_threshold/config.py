"""The configuration of the optimization-threshold experiment (Boursier & Flammarion,
*Simplicity bias and optimization threshold in two-layer ReLU networks*,
arXiv:2410.02348)."""

import math

import equinox as eqx
import numpy as np

from ..._misc import check_positive_int
from .measures import INPUTS


ACTIVATIONS = ("relu", "gelu")


def _positive(name: str, value) -> None:
    if not isinstance(value, int | float | np.floating) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")


def _sizes(name: str, sizes) -> None:
    if (
        not sizes
        or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in sizes)
        or list(sizes) != sorted(set(sizes))
    ):
        raise ValueError(
            f"`{name}` must be a non-empty increasing tuple of distinct positive integers, got "
            f"{sizes!r}."
        )


class ThresholdConfig(eqx.Module):
    """A ReLU student without bias $f_\\theta(x) = \\sum_{j=1}^m a_j\\,\\mathrm{relu}(w_j\\cdot x)$
    trained by the gradient flow of the mean squared loss on $y_i = \\beta^*\\cdot x_i +
    \\eta_i$, $\\eta_i \\sim N(0, \\sigma^2)$, from a small init of scale $\\lambda$.

    Every run draws its own sample and its own init (seed $s$ of size $n$ and dimension
    $d$ has its own stream, `data_rng`); the flow is the exact Filippov flow
    (`gradflow.gradient_flow(..., kinks="exact")`) run to `t1`, and a run counts as
    converged when its `stationarity` $\\|\\dot\\theta\\|/\\|\\theta\\|$ is at most
    `stationarity_tol` there.

    **Arguments:**

    - `inputs`: `"gaussian"` ($x \\sim N(0, I_d)$) or `"ball"` (uniform in the unit ball).
    - `noise`: $\\sigma$. `teacher_norm`: $\\|\\beta^*\\|$; $\\beta^*$ points along
      $(1, \\dots, 1)/\\sqrt d$ unless `teacher` gives it (then every dimension of the
      config must be its length).
    - `init_scale`: $\\lambda$. `balanced=True`: each neuron starts with $w_j$ uniform on
      the sphere of radius $\\lambda$ and $a_j = \\pm\\lambda$ (`random_net(...,
      distribution="sphere")`, $|a_j| = \\|w_j\\|$, conserved by the flow); `False`: i.i.d.
      $N(0, \\lambda^2)$ entries.
    - **Loss against $n$** (the paper's Fig. 1): `loss_dim` $d$, `loss_sizes`,
      `widths` (one curve per width $m$).
    - **Threshold against $d$**: `dims`, for each the sizes $n = \\mathrm{round}(f\\,d)$ for
      $f$ in `size_factors` (and $n \\ge 2$), width `threshold_width`. `loss_dim` with
      `threshold_width` is shared with the loss sweep when both lists agree there.
    - `num_seeds`, `seed`; `width_seeds`: seeds per point for the widths of `widths`
      other than `threshold_width` (None: `num_seeds`); seed $s$ is the same run
      whatever the count.
    - `t1`, `num_times`: the flow's horizon and its log-spaced save times (from
      `t_first`); `max_steps`: the solver's step budget per run (an interpolating run's
      late phase is stiff for the explicit steps between events; one that exhausts the
      budget counts as not converged). `stop_early=True` passes the exact flow's stop
      rules: `stationarity_tol` (a converged run stops there) and a `loss_tol` of a tenth
      of the interpolation tolerance on ½·MSE (an interpolating run stops once that is
      certain: the loss never rises along the flow). On by default: a run that has
      converged costs nothing more, so `t1` and `max_steps` bound only the slow ones.
    - `stationarity_tol`: a run has converged when $\\|\\dot\\theta\\|/\\|\\theta\\| \\le$ this
      at its end.
    - `interpolation_tol`: a run interpolates when its training MSE is below this
      times $\\sigma^2$; it does not when its MSE is above and it has converged;
      otherwise it is undetermined (left out of $n^*$).
    - `alignment_growth`: the alignment phase ends at the first save time where
      $\\|\\theta(t)\\| \\ge$ this $\\times \\|\\theta(0)\\|$.
    - `cluster_angle_deg`, `cluster_min_share`: see `measures.count_clusters`.
    - `num_resamples`: bootstrap replicates of $n^*$.
    - **Optimizers and GELU** (same data, `compare_dim`, `compare_sizes`,
      `compare_width`, `compare_seeds`; the data and inits of that block's first seeds):
      gradient descent with step `learning_rate` to `descent_t1`, Adam with step
      `adam_learning_rate` for as many steps, and the smooth flow of a GELU student
      (`gradflow.GELU`) to `t1`.
    - `test_samples`: Monte Carlo points for a population loss without closed form
      (GELU).
    - `chunk_size`: runs per compiled chunk, the unit of checkpoints.
    """

    inputs: str = "gaussian"
    noise: float = 0.3
    teacher_norm: float = 1.0
    teacher: tuple[float, ...] | None = None
    init_scale: float = 1e-6
    balanced: bool = True
    loss_dim: int = 5
    loss_sizes: tuple[int, ...] = (5, 10, 20, 40, 80)
    widths: tuple[int, ...] = (10, 30)
    dims: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10)
    size_factors: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
    threshold_width: int = 10
    num_seeds: int = 40
    width_seeds: int | None = 20
    seed: int = 0
    t1: float = 100_000.0
    t_first: float = 1e-1
    num_times: int = 60
    stationarity_tol: float = 1e-8
    interpolation_tol: float = 1e-2
    alignment_growth: float = 100.0
    cluster_angle_deg: float = 5.0
    cluster_min_share: float = 1e-3
    num_resamples: int = 1000
    compare_dim: int = 5
    compare_sizes: tuple[int, ...] = (5, 20, 80)
    compare_width: int = 10
    compare_seeds: int = 3
    learning_rate: float = 0.05
    adam_learning_rate: float = 1e-3
    descent_t1: float = 3000.0
    test_samples: int = 100_000
    max_steps: int = 100_000
    stop_early: bool = True
    chunk_size: int = 10

    def __check_init__(self):
        if self.inputs not in INPUTS:
            raise ValueError(
                f"`inputs` must be one of {INPUTS}, got {self.inputs!r}: 'gaussian' for "
                "N(0, I_d), 'ball' for uniform in the unit ball."
            )
        for name in (
            "noise",
            "teacher_norm",
            "init_scale",
            "t1",
            "t_first",
            "stationarity_tol",
            "interpolation_tol",
            "cluster_angle_deg",
            "cluster_min_share",
            "learning_rate",
            "adam_learning_rate",
            "descent_t1",
        ):
            _positive(name, getattr(self, name))
        if not self.t_first < self.t1:
            raise ValueError(f"`t_first` ({self.t_first}) must be below `t1` ({self.t1}).")
        if not self.alignment_growth > 1:
            raise ValueError(
                f"`alignment_growth` must exceed 1 (a multiple of the initial norm), got "
                f"{self.alignment_growth!r}."
            )
        if not self.interpolation_tol < 1:
            raise ValueError(
                f"`interpolation_tol` must be below 1 (a fraction of σ²: a run settled near "
                f"the least-squares fit keeps about σ²(1 - d/n)), got {self.interpolation_tol!r}."
            )
        for name in (
            "loss_dim",
            "threshold_width",
            "num_seeds",
            "num_times",
            "num_resamples",
            "compare_dim",
            "compare_width",
            "compare_seeds",
            "test_samples",
            "chunk_size",
            "max_steps",
        ):
            check_positive_int(name, getattr(self, name))
        for name in ("loss_sizes", "widths", "dims", "compare_sizes"):
            _sizes(name, getattr(self, name))
        if not self.size_factors or any(
            not (isinstance(f, int | float) and math.isfinite(f) and f > 0)
            for f in self.size_factors
        ):
            raise ValueError(f"`size_factors` must be positive numbers, got {self.size_factors!r}.")
        if self.num_seeds < 2:
            raise ValueError("`num_seeds` must be at least 2 (n* needs a fraction of runs).")
        if self.width_seeds is not None and (
            not isinstance(self.width_seeds, int) or not 2 <= self.width_seeds <= self.num_seeds
        ):
            raise ValueError(
                f"`width_seeds` must be None or an integer from 2 to `num_seeds` "
                f"({self.num_seeds}), got {self.width_seeds!r}."
            )
        # The comparison reuses the ReLU flows of one block: it must be run.
        from .run import blocks

        flows = {(d, m): sizes for m, specs in blocks(self).items() for d, sizes in specs}
        if (self.compare_dim, self.compare_width) not in flows:
            raise ValueError(
                f"`compare_dim`, `compare_width` = ({self.compare_dim}, {self.compare_width}) "
                f"name no block of flows (the comparison starts from their data and inits); "
                f"choose one of {sorted(flows)}, (d, `threshold_width`) for d in `dims` or "
                f"(`loss_dim`, m) for m in `widths`."
            )
        if not set(self.compare_sizes) <= set(flows[(self.compare_dim, self.compare_width)]):
            raise ValueError(
                f"`compare_sizes` {self.compare_sizes!r} must be among the sizes of the "
                f"block they reuse, {flows[(self.compare_dim, self.compare_width)]}."
            )
        if self.compare_seeds > self.seeds_at(self.compare_width):
            raise ValueError(
                f"`compare_seeds` ({self.compare_seeds}) must be at most the seeds run at "
                f"`compare_width` ({self.seeds_at(self.compare_width)})."
            )
        if self.teacher is not None:
            used = {self.loss_dim, self.compare_dim, *self.dims}
            if used != {len(self.teacher)}:
                raise ValueError(
                    f"`teacher` has {len(self.teacher)} entries, but the config uses the "
                    f"dimensions {sorted(used)}; give `teacher=None` (β* along (1, ..., 1)/√d "
                    f"of norm `teacher_norm`) or set `dims`, `loss_dim` and `compare_dim` to "
                    f"{len(self.teacher)}."
                )
            if not np.linalg.norm(self.teacher) > 0:
                raise ValueError("`teacher` must not be zero.")

    def seeds_at(self, width: int) -> int:
        """Seeds per point of the runs at `width`."""
        if width == self.threshold_width or self.width_seeds is None:
            return self.num_seeds
        return self.width_seeds

    def beta(self, dim: int) -> np.ndarray:
        """$\\beta^*$ in dimension `dim`."""
        if self.teacher is not None:
            return np.asarray(self.teacher, np.float64)
        return np.full(dim, self.teacher_norm / math.sqrt(dim))

    def threshold_sizes(self, dim: int) -> tuple[int, ...]:
        """The sizes of the threshold sweep in dimension `dim`."""
        return tuple(sorted({max(2, int(round(f * dim))) for f in self.size_factors}))

    def data(self, dim: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The sample `(x (n, d), y (n,))` of seed `seed`: its own stream per
        (`self.seed`, `dim`, `n`, `seed`)."""
        rng = np.random.default_rng([self.seed, dim, n, seed])
        from .measures import sample_inputs

        x = sample_inputs(rng, n, dim, self.inputs)
        y = x @ self.beta(dim) + self.noise * rng.standard_normal(n)
        return x, y

    def times(self) -> np.ndarray:
        """Save times: 0, then `num_times` log-spaced from `t_first` to `t1`."""
        return np.concatenate([[0.0], np.geomspace(self.t_first, self.t1, self.num_times)])


def quick_config() -> ThresholdConfig:
    """The CI size: every code path, tiny grids (two dimensions, one width, three sizes
    each, three seeds)."""
    return ThresholdConfig(
        loss_dim=3,
        loss_sizes=(3, 12),
        widths=(4,),
        dims=(2, 3),
        size_factors=(1.0, 2.0, 4.0),
        threshold_width=4,
        num_seeds=3,
        width_seeds=None,
        t1=1000.0,
        num_times=25,
        num_resamples=100,
        compare_dim=3,
        compare_sizes=(3, 12),
        compare_width=4,
        compare_seeds=1,
        descent_t1=200.0,
        test_samples=10_000,
        max_steps=20_000,
        stop_early=True,
        chunk_size=6,
    )
