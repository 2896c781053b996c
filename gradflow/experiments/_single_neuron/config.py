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
Init = Literal["gaussian", "near_target"]
SolverName = Literal["rodas5p", "tsit5"]


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
    - `init`: `"gaussian"` ($\\bar\\theta_0$ i.i.d. $N(0, 1)$), or `"near_target"`: a point
      of the target set $Q^1$ (neuron 1 equal to the target, the others zero) plus
      $\\varepsilon$ times i.i.d. $N(0, 1)$ noise; used to find the optimistic sample size.
    - `imbalance`: if set, the initial imbalance is prescribed,
      $C_k(\\theta_0) = a_k^2 - \\|w_k\\|^2 = \\varepsilon^2\\,$`imbalance[k]` (directions
      and signs as drawn, see `gradflow.net_with_imbalance`).
    - `t1`, `num_times`, `t_min`: final time; `num_times` log-spaced save times from
      `t_min` (plus $t = 0$).
    - `loss_tol`: stop once the loss is below it (`None`: run to `t1`).
    - `rtol`, `solver` (`"rodas5p"`: the L-stable Rosenbrock method, needed to reach
      the converged end points of the stiff late phase; `"tsit5"`: explicit, cheaper per
      step, for wide students and short runs), `max_steps`.
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
    imbalance: tuple[float, ...] | None = None
    t1: float = 1e10
    num_times: int = 200
    t_min: float = 1e-3
    loss_tol: float | None = 1e-20
    rtol: float = 1e-10
    solver: SolverName = "rodas5p"
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
        if self.init not in ("gaussian", "near_target"):
            raise ValueError(f"`init` must be 'gaussian' or 'near_target', got {self.init!r}.")
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
        if self.loss_tol is not None:
            _positive("loss_tol", self.loss_tol)
        if not self.t_min < self.t1:
            raise ValueError(f"`t_min` must be below `t1`, got {self.t_min} ≥ {self.t1}.")
        if not isinstance(self.num_times, int) or self.num_times < 2:
            raise ValueError(f"`num_times` must be an integer ≥ 2, got {self.num_times!r}.")
        if not 0 < self.escape_fraction < 1:
            raise ValueError(f"`escape_fraction` must lie in (0, 1), got {self.escape_fraction}.")
        if self.solver not in ("rodas5p", "tsit5"):
            raise ValueError(f"`solver` must be 'rodas5p' or 'tsit5', got {self.solver!r}.")

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
