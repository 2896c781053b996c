"""The grid (sample size $n$) × (init scale $\\varepsilon$) × seed of a sweep, as one flat
batch of runs and back, and data sets padded to a common size."""

from collections.abc import Sequence

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Key

from ._labels import to_dataset
from ._misc import check_positive_int
from ._solution import Solution


def _sizes(sizes: Sequence[int]) -> tuple:
    return tuple(int(n) if isinstance(n, np.integer) else n for n in sizes)


def _scales(scales: Sequence[float]) -> tuple:
    return tuple(float(s) for s in np.asarray(scales, dtype=np.float64).ravel())


class Grid(eqx.Module):
    """The runs (sample size $n$) × (init scale $\\varepsilon$) × seed of a sweep.

    The runs are flattened into one batch axis in C order (seed fastest); `points` gives
    each run's place on the grid and `label` puts a `Solution` of the flat batch back on
    it. Seed $s$ has the same key (`keys()[s]`) at every $(n, \\varepsilon)$, so runs are
    paired across the grid.

    **Arguments:**

    - `sizes`: the sample sizes $n$ (positive integers).
    - `scales`: the init scales $\\varepsilon$ (positive numbers).
    - `num_seeds`: seeds per grid point.
    - `seed`: the seed of the keys.
    """

    sizes: tuple[int, ...] = eqx.field(converter=_sizes)
    scales: tuple[float, ...] = eqx.field(converter=_scales)
    num_seeds: int
    seed: int = 0

    def __check_init__(self):
        if not self.sizes or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in self.sizes
        ):
            raise ValueError(
                f"`sizes` must be a non-empty list of positive integers, got {list(self.sizes)}."
            )
        if not self.scales or not all(np.isfinite(s) and s > 0 for s in self.scales):
            raise ValueError(
                f"`scales` must be a non-empty list of positive numbers, got {list(self.scales)}."
            )
        check_positive_int("num_seeds", self.num_seeds)

    @property
    def dims(self) -> tuple[str, str, str]:
        return ("n", "scale", "seed")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.sizes), len(self.scales), self.num_seeds)

    def coords(self) -> dict[str, np.ndarray]:
        """`{"n": sizes, "scale": scales, "seed": 0, 1, ...}`."""
        return dict(
            n=np.asarray(self.sizes),
            scale=np.asarray(self.scales, dtype=np.float64),
            seed=np.arange(self.num_seeds),
        )

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(size, scale, seed)` indices of every run, flat in C order."""
        i_n, i_scale, i_seed = (v.ravel() for v in np.indices(self.shape))
        return i_n, i_scale, i_seed

    def keys(self) -> Key[Array, " seeds"]:
        """One key per seed, the same at every grid point."""
        return jax.random.split(jax.random.key(self.seed), self.num_seeds)

    def label(self, solution: Solution):
        """A `Solution` of the flat batch as an `xarray.Dataset` on the grid (see
        `to_dataset`)."""
        return to_dataset(solution, self.coords())


def pad_samples(
    n: int,
    x: Float[ArrayLike, "... s d"],
    y: Float[ArrayLike, "..."],  # (..., s) or (..., s, k)
    weights: Float[ArrayLike, "... s"] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(x, y, weights)` of `s` samples padded to `n` samples with zero-weight samples
    ($x = 0$, $y = 0$), which `squared_loss` ignores exactly, so that data sets of several
    sizes share one compiled program. `y` may carry a trailing output axis `(s, k)`.
    `weights=None` means weight one for every real sample. NumPy in and out: padding
    happens on the host, before the data goes to the device."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"`x` must have shape (..., s, d), got {x.shape}.")
    # The sample axis is x's second-to-last; y and the weights share x's leading axes, so
    # it has the same index in each (y's trailing output axis, if any, comes after it).
    axis = x.ndim - 2
    weights = np.ones(x.shape[:-1], x.dtype) if weights is None else np.asarray(weights)
    pad = n - x.shape[axis]
    if pad < 0:
        raise ValueError(f"Cannot pad {x.shape[axis]} samples to `n` = {n}.")

    def at_end(v):
        widths = [(0, 0)] * v.ndim
        widths[axis] = (0, pad)
        return np.pad(v, widths)

    return at_end(x), at_end(y), at_end(weights)
