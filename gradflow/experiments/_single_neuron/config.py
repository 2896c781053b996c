"""The configuration of a single-neuron target recovery experiment."""

import math
from typing import Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

import gradflow as gf

from ..._misc import check_positive_int


Design = Literal["interval", "gaussian"]
Init = Literal["gaussian", "near_target", "zero_output", "small_hidden", "balanced", "growing_mode"]
INITS = ("gaussian", "near_target", "zero_output", "small_hidden", "balanced", "growing_mode")
ImbalanceBy = Literal["exact", "rescale"]
SolverName = Literal["default", "two_phase", "rodas5p", "tsit5"]


def _positive(name: str, value) -> None:
    if not isinstance(value, int | float | np.floating) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")


class SingleNeuronConfig(eqx.Module):
    """A student $f_\\theta(x) = \\sum_{k=1}^m a_k\\,\\sigma(w_k\\cdot x)$ learning the
    single-neuron target $f^*(x) = a^*\\sigma^*(w^*\\cdot x)$ by gradient flow on the loss
    $\\ell(\\theta) = \\tfrac12\\sum_{i=1}^n (f_\\theta(x_i) - f^*(x_i))^2$ from
    $\\theta_0 = \\varepsilon\\bar\\theta_0$ (Zhao, Bai & Zhang, arXiv:2405.13787).

    Inputs are $x = (s, 1)$ with $s \\in \\mathbb{R}^{\\text{dim}}$: with `bias=True` a
    constant coordinate is appended, so $w_k$ and $w^*$ have `dim + 1` entries and the
    last one acts as a bias. Every run of the grid `sizes` × `scales` × seed is one
    gradient flow; seed $s$ uses the same $\\bar\\theta_0$ at every $(n, \\varepsilon)$.

    **Arguments** (all have the defaults of the paper's Example 1: two tanh neurons,
    target $\\tanh(s + 1)$, points evenly spaced on $[-2, 2]$):

    - `activation`: the student's $\\sigma$ (a name or an `AbstractActivation`); it must
      have $\\sigma(0) = 0$, so a neuron with $a_k = 0$ or $w_k = 0$ is the zero function.
    - `width`: $m$. `dim`: $\\dim s$. `bias`: append the constant coordinate.
    - `target_a`, `target_w`: $a^*$ and $w^*$ (length `dim + bias`).
    - `target_activation`: $\\sigma^*$; `None` means the student's, so the student can
      represent the target. Another activation (Fig. 5 of the paper: rational student,
      tanh labels) makes recovery impossible by construction: say so explicitly.
    - `design`: `"interval"` ($n$ points evenly spaced on `interval`, `dim = 1` only) or
      `"gaussian"` ($s_i \\sim N(0, I)$, drawn per seed; the first $n$ of one draw of
      `max(sizes)`, so the sizes of one seed are nested; see `raw_inputs`).
    - `sizes`, `scales`, `num_seeds`, `seed`: the grid of $n$, of $\\varepsilon$, and the
      seeds.
    - `init`: the distribution of $\\bar\\theta_0$:
        - `"gaussian"`: i.i.d. $N(0, 1)$ (the paper's);
        - `"near_target"`: a point of the target set $Q^1$ (neuron 1 equal to the
          target, the others zero) plus $\\varepsilon$ times i.i.d. $N(0, 1)$ noise;
        - `"zero_output"`: $a_k = 0$, $w_k$ i.i.d. $N(0, 1)$, so $C_k = -\\|w_k\\|^2$;
        - `"small_hidden"`: $a_k \\sim N(0, 1)$, $w_k$ i.i.d. $N(0, 10^{-6})$, so
          $C_k = a_k^2$ up to $10^{-6}$ and $|C_1/C_2| = |\\alpha_1/\\alpha_2|^2$ up to
          $10^{-3}$ (a hidden layer exactly at 0 has no log-radius);
        - `"balanced"`: $w_k$ uniform on the unit sphere, $a_k = \\pm 1$, so $C_k = 0$
          (`gradflow.random_net(distribution="sphere")`);
        - `"growing_mode"` (width 2): the pure unstable mode of the flow linearised at 0,
          neuron 1 $= r_s(1, \\hat g)/\\sqrt2$, neuron 2 $= (1, \\hat g)/\\sqrt2$ with
          $\\hat g \\propto \\sum_i y_i x_i$ of the run's data and $r_s$ = `mode_ratios[s]`
          for seed $s$: the $\\varepsilon \\to 0$ limit of any init with
          $\\alpha_1/\\alpha_2 = r_s$ (see `measures.growing_mode`).
    - `mode_ratios`: $\\alpha_1/\\alpha_2$ of each seed for `init="growing_mode"`
      (`num_seeds` entries).
    - `imbalance`: if set, the initial imbalance is prescribed. With
      `imbalance_by="exact"`, $C_k(\\theta_0) = a_k^2 - \\|w_k\\|^2 =
      \\varepsilon^2\\,$`imbalance[k]` (directions and signs as drawn, one factor per
      neuron rescaled, see `gradflow.net_with_imbalance`). With `"rescale"` (the
      paper's Fig. 2) only the ratios are prescribed: $\\bar\\theta_0$ is drawn, and
      neurons $k \\ge 2$ are scaled as a whole, $(a_k, w_k) \\to r_k(a_k, w_k)$, so
      that $C_k/C_1$ = `imbalance[k] / imbalance[0]`; draws where the signs of the
      $C_k$ cannot give that ratio are replaced by the next draw of the seed's key.
    - `t1`, `num_times`, `t_min`: final time; `num_times` log-spaced save times from
      `t_min` (plus $t = 0$).
    - `loss_tol`: stop once the loss is below it (`None`: run to `t1`).
    - `stationarity_tol`: stop once $\\|\\nabla\\ell\\| \\le$ `stationarity_tol`
      $\\cdot\\|\\theta\\|$ (`None`: no such stop).
    - `rtol`, `solver` (`"default"`: whatever `gradflow.default_solver` picks for the
      student, e.g. a matrix-free implicit late phase for wide ones; `"two_phase"`:
      `TwoPhase()`, Tsit5 through
      the escape and the fit, then the L-stable Rosenbrock method Rodas5P, needed to
      reach the converged end points of the stiff late phase; `"rodas5p"`: Rodas5P
      throughout; `"tsit5"`: explicit, cheaper per step, for wide students and short
      runs), `max_steps`.
    - `recovery_threshold`: a run *recovers* the target if its generalisation error is
      below this (the paper: $10^{-8}$).
    - `escape_fraction`: the escape time is the first time the loss falls below this
      fraction of its initial value.
    - `carry_tolerance`: a neuron carries (part of) the function if its output's RMS on
      the test set exceeds this times the target's.
    - `num_test`, `test_seed`: test set (grid points, quadrature nodes, or Monte Carlo
      samples, see `held_out_set`).
    - `chunk_size`: runs per compiled batch.
    """

    activation: str | gf.AbstractActivation = "tanh"
    width: int = 2
    dim: int = 1
    bias: bool = True
    target_a: float = 1.0
    target_w: tuple[float, ...] = (1.0, 1.0)
    target_activation: str | gf.AbstractActivation | None = None
    design: Design = "interval"
    interval: tuple[float, float] = (-2.0, 2.0)
    sizes: tuple[int, ...] = (2, 3, 4, 5, 6)
    scales: tuple[float, ...] = (1e-2, 1e-4, 1e-8)
    num_seeds: int = 50
    seed: int = 0
    init: Init = "gaussian"
    mode_ratios: tuple[float, ...] | None = None
    imbalance: tuple[float, ...] | None = None
    imbalance_by: ImbalanceBy = "exact"
    t1: float = 1e10
    num_times: int = 200
    t_min: float = 1e-3
    loss_tol: float | None = 1e-20
    stationarity_tol: float | None = None
    rtol: float = 1e-10
    solver: SolverName = "two_phase"
    max_steps: int = 100_000
    recovery_threshold: float = 1e-8
    escape_fraction: float = 0.5
    carry_tolerance: float = 1e-2
    num_test: int = 2001
    test_seed: int = 12345
    chunk_size: int = 256

    def __check_init__(self):
        for name in ("width", "dim", "num_seeds", "num_test", "chunk_size", "max_steps"):
            check_positive_int(name, getattr(self, name))
        sigma = gf.get_activation(self.activation)
        if float(sigma(jnp.zeros(()))) != 0:
            raise ValueError(
                f"`activation` must have σ(0) = 0, got σ(0) = {float(sigma(jnp.zeros(())))}: "
                "otherwise a neuron with a = 0 or w = 0 is not the zero function and the "
                "target sets Q^k are not defined."
            )
        if self.target_activation is not None:
            gf.get_activation(self.target_activation)
        if len(self.target_w) != self.dim + self.bias:
            raise ValueError(
                f"`target_w` has {len(self.target_w)} entries, but the student's neurons see "
                f"dim + bias = {self.dim + self.bias} input coordinates, so the student "
                "cannot represent this target. Give w* one entry per input coordinate (the "
                "last one is the bias when `bias=True`)."
            )
        if not all(math.isfinite(v) for v in self.target_w) or not math.isfinite(self.target_a):
            raise ValueError("`target_a` and `target_w` must be finite.")
        if self.target_a == 0 or not any(self.target_w):
            raise ValueError(
                "`target_a` and `target_w` must be non-zero: the target "
                f"{self.target_a}·σ({list(self.target_w)}·x) is the zero function, which "
                "every neuron-free student represents; there is nothing to recover."
            )
        if self.design not in ("interval", "gaussian"):
            raise ValueError(f"`design` must be 'interval' or 'gaussian', got {self.design!r}.")
        if self.design == "interval":
            if self.dim != 1:
                raise ValueError(
                    f"`design='interval'` spaces points on a line, so it needs `dim=1`, got "
                    f"dim={self.dim}. Use `design='gaussian'` for higher dimensions."
                )
            lo, hi = self.interval
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"`interval` must be (lo, hi) with lo < hi, got {self.interval}.")
        if len(self.sizes) == 0:
            raise ValueError("`sizes` must list at least one sample size n.")
        for n in self.sizes:
            if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
                raise ValueError(
                    f"`sizes` must hold sample sizes n ≥ 1 (integers), got {list(self.sizes)}."
                )
        if len(self.scales) == 0:
            raise ValueError("`scales` must list at least one init scale ε.")
        for eps in self.scales:
            if not (isinstance(eps, int | float | np.floating) and math.isfinite(eps) and eps > 0):
                raise ValueError(f"`scales` must hold init scales ε > 0, got {list(self.scales)}.")
        if self.init not in INITS:
            raise ValueError(f"`init` must be one of {INITS}, got {self.init!r}.")
        if self.init == "growing_mode":
            if self.width != 2:
                raise ValueError(f"`init='growing_mode'` needs `width=2`, got {self.width}.")
            if self.mode_ratios is None or len(self.mode_ratios) != self.num_seeds:
                raise ValueError(
                    "`mode_ratios` must give α1/α2 for each of the `num_seeds` = "
                    f"{self.num_seeds} seeds of `init='growing_mode'`."
                )
            if not all(math.isfinite(r) and r > 0 for r in self.mode_ratios):
                raise ValueError(f"`mode_ratios` must be positive, got {self.mode_ratios}.")
        elif self.mode_ratios is not None:
            raise ValueError("`mode_ratios` is only used with `init='growing_mode'`.")
        if self.imbalance_by not in ("exact", "rescale"):
            raise ValueError(
                f"`imbalance_by` must be 'exact' or 'rescale', got {self.imbalance_by!r}."
            )
        if self.imbalance is not None:
            if len(self.imbalance) != self.width:
                raise ValueError(
                    f"`imbalance` prescribes C_k/ε² for each neuron: it needs `width` = "
                    f"{self.width} entries, got {len(self.imbalance)}."
                )
            if self.init != "gaussian":
                raise ValueError("`imbalance` can only be prescribed with `init='gaussian'`.")
        for name in ("t1", "t_min", "rtol", "recovery_threshold", "carry_tolerance"):
            _positive(name, getattr(self, name))
        for name in ("loss_tol", "stationarity_tol"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if not self.t_min < self.t1:
            raise ValueError(f"`t_min` must be below `t1`, got {self.t_min} ≥ {self.t1}.")
        if not isinstance(self.num_times, int) or self.num_times < 2:
            raise ValueError(f"`num_times` must be an integer ≥ 2, got {self.num_times!r}.")
        if not 0 < self.escape_fraction < 1:
            raise ValueError(f"`escape_fraction` must lie in (0, 1), got {self.escape_fraction}.")
        if self.solver not in ("default", "two_phase", "rodas5p", "tsit5"):
            raise ValueError(
                "`solver` must be 'default', 'two_phase', 'rodas5p' or 'tsit5', got "
                f"{self.solver!r}."
            )

    @property
    def input_dim(self) -> int:
        """Coordinates of $x$ as the network sees it: `dim` plus the bias coordinate."""
        return self.dim + self.bias

    def target(self, x: Float[Array, "*batch n d"]) -> Float[Array, "*batch n"]:
        """$f^*(x) = a^*\\sigma^*(w^* \\cdot x)$ at network inputs `x` (bias included)."""
        sigma = gf.get_activation(self.target_activation or self.activation)
        x = jnp.asarray(x)
        return self.target_a * sigma(x @ jnp.asarray(self.target_w, x.dtype))

    def inputs(self, s: Float[ArrayLike, "n dim"]) -> np.ndarray:
        """Network inputs $x = (s, 1)$ (or $s$ without a bias coordinate), as NumPy."""
        s = np.asarray(s, np.float64)
        return np.concatenate([s, np.ones(s.shape[:-1] + (1,))], axis=-1) if self.bias else s

    def raw_inputs(self, n: int, seed_index: int = 0) -> np.ndarray:
        """The $n$ training inputs $s_i$ of seed `seed_index`, shape `(n, dim)`: evenly
        spaced (the same for every seed), or the first $n$ of the seed's Gaussian draw of
        `max(sizes, n)` points (NumPy's generator seeded by `(seed, seed_index)`)."""
        if self.design == "interval":
            lo, hi = self.interval
            return np.linspace(lo, hi, n)[:, None]
        rng = np.random.default_rng([self.seed, seed_index])
        return rng.standard_normal((max(max(self.sizes), n), self.dim))[:n]

    def training_data(self, n: int, seed_index: int = 0):
        """`(x, y)` of shapes `(n, dim + bias)` and `(n,)`."""
        x = self.inputs(self.raw_inputs(n, seed_index))
        return jnp.asarray(x), self.target(jnp.asarray(x))
