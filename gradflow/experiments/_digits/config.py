"""The configuration of the digits experiment: data, activations, the two regimes, and the
frequency measures."""

import math

import equinox as eqx
import numpy as np

from ..._misc import check_positive_int


ACTIVATIONS = ("relu", "tanh", "gaussian", "sinc", "sinc2", "designed")
DESIGNED = "digits_bandpass"


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")


def gaussian_band_target(k, centre: float = 2.0, width: float = 0.25):
    """A band-pass penalty smooth in $k^2$:
    $\\rho(k) = \\exp\\big[\\big((k^2 - k_0^2)/(2k_0 w)\\big)^2\\big]$, so
    $|\\hat\\varphi| = \\rho^{-1/2}$ (in 1-D) is a Gaussian bump of width about $w$ at
    $\\pm k_0$, and $\\rho(0)/\\rho(k_0) = e^{k_0^2/(4w^2)}$ ($8.9\\times10^6$ at the defaults):
    low frequencies are penalised as well as high ones. Smooth and fast-decaying in $k$,
    so the designed $\\varphi$ decays within a short period and has few cosine terms
    (44 at the defaults), cheap enough for a network."""
    k = np.asarray(k, np.float64)
    with np.errstate(over="ignore"):
        return np.exp(((k**2 - centre**2) / (2 * centre * width)) ** 2)


class DigitsConfig(eqx.Module):
    """All of the digits experiment's settings (defaults: the full run).

    **Data.** scikit-learn's 8×8 digits, or MNIST from `mnist_path` (a directory with
    the four IDX files; nothing is downloaded). Per seed, `train_per_class` images of
    each digit for training (stratified draw), the rest for testing (at most
    `max_test` of them). Targets one-hot in $\\mathbb{R}^{10}$; prediction = the largest
    output. Inputs centred and scaled (`data.Preprocessing`).

    **Activations.** `activations`; `"designed"` is the band-pass activation of
    `gaussian_band_target` (`band_centre`, `band_width`), built by
    `gradflow.radon.design_activation` (`design_period`) and registered as
    `"digits_bandpass"`.

    **Kernel regime.** A frozen random hidden layer of `kernel_width` neurons,
    $w = \\sigma z$, $b = \\sigma\\zeta$ with $z \\sim N(0, I_d)$, $\\zeta \\sim N(0, 1)$, for
    each frequency scale $\\sigma$ of `kernel_scales` (`scale` is the one shown
    against the adaptive regime); the outer layer from $a = 0$ by the gradient flow of
    the mean loss, whose solution is closed form. Reported at the time its training
    loss reaches `loss_tol` and at `kernel_time` (near the minimum-norm interpolant).

    **Adaptive regime.** `adaptive_width` neurons, every weight trained. `adaptive_init`:
    `"outer"` (default) draws the hidden layer as the kernel regime's ($\\sigma$ = `scale`)
    and $a \\sim N(0, \\varepsilon^2)$, $\\varepsilon$ = `init_scale`; `"small"` draws all of
    $(a, W, b)$ i.i.d. $N(0, \\varepsilon^2)$ (for the even activations with
    $\\varphi'(0) = 0$ — Gaussian, sinc, sinc², the design — the hidden layer then grows
    only through $\\varphi''(0)$ and the flow sits for a long time at the class mean: too
    slow for the full run). Trained by the gradient flow (`gradflow.flow_ensemble`,
    explicit Tsit5 at `rtol`, at most `max_steps`) until the training loss is below
    `loss_tol` or $t$ = `adaptive_t1`. Kinked activations (ReLU) by `relu_method`:
    `"exact"`, the exact Filippov flow (`kinks="exact"`, at most `relu_max_steps` steps;
    ~15–30 s a seed at full size on one core), or `"descent"`, gradient descent at
    `relu_learning_rate`, stopped at the first of `num_times` log-spaced save times where
    the loss is below `loss_tol` (at η = 0.1 it ends 0.43 from the flow on seed 0, at 0.03
    within 3.5e-5: `benchmarks/RESULTS.md`, session 10).

    **Measures.** DCT cut-offs: every band $0 \\dots 2L - 2$. Spectra on `num_lines`
    random lines of half-length `line_half_length`, `line_points` samples each;
    high-frequency shares above each of `spectrum_cutoffs`.
    """

    activations: tuple[str, ...] = ACTIVATIONS
    mnist_path: str | None = None
    train_per_class: int = 30
    max_test: int = 5000
    num_seeds: int = 5
    seed: int = 0
    kernel_width: int = 1000
    kernel_scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    scale: float = 1.0
    kernel_time: float = 1e8
    adaptive_width: int = 32
    adaptive_init: str = "outer"
    init_scale: float = 1e-3
    max_steps: int = 10_000
    adaptive_t1: float = 3000.0
    loss_tol: float = 0.05
    rtol: float = 1e-8
    relu_learning_rate: float = 0.1
    relu_method: str = "exact"
    relu_max_steps: int = 100_000
    num_times: int = 200
    band_centre: float = 2.0
    band_width: float = 0.25
    design_period: float = 80.0
    num_lines: int = 32
    line_points: int = 512
    line_half_length: float = 2.0
    spectrum_cutoffs: tuple[float, ...] = (4.0, 8.0, 16.0)

    def __check_init__(self):
        for name in ("train_per_class", "max_test", "num_seeds", "kernel_width",
                     "adaptive_width", "max_steps", "num_times", "num_lines",
                     "line_points", "relu_max_steps"):  # fmt: skip
            check_positive_int(name, getattr(self, name))
        for name in ("scale", "kernel_time", "init_scale", "adaptive_t1", "loss_tol", "rtol",
                     "relu_learning_rate", "band_centre", "band_width", "design_period",
                     "line_half_length"):  # fmt: skip
            _positive(name, getattr(self, name))
        if not self.activations or len(set(self.activations)) != len(self.activations):
            raise ValueError(f"`activations` must be distinct names, got {self.activations!r}.")
        known = set(ACTIVATIONS) | {"leaky_relu", "softplus", "gelu", "erf", "rational"}
        unknown = [a for a in self.activations if a not in known]
        if unknown:
            raise ValueError(
                f"`activations`: unknown {unknown}; choose from {sorted(known)} "
                "('designed' is the band-pass design of this experiment)."
            )
        if not self.kernel_scales or any(
            isinstance(s, bool) or not isinstance(s, int | float) or not s > 0
            for s in self.kernel_scales
        ):
            raise ValueError(
                f"`kernel_scales` must list positive numbers, got {self.kernel_scales!r}."
            )
        if self.scale not in self.kernel_scales:
            raise ValueError(
                f"`scale` = {self.scale} must be one of `kernel_scales` {self.kernel_scales}."
            )
        if self.relu_method not in ("descent", "exact"):
            raise ValueError(
                f"`relu_method` must be 'descent' (gradient descent at `relu_learning_rate`) "
                f"or 'exact' (the exact Filippov flow), got {self.relu_method!r}."
            )
        if self.adaptive_init not in ("outer", "small"):
            raise ValueError(
                f"`adaptive_init` must be 'outer' or 'small', got {self.adaptive_init!r}."
            )
        if self.num_seeds < 2:
            raise ValueError("`num_seeds` must be at least 2 (a spread needs two).")
        if self.kernel_width < 10 * self.train_per_class:
            raise ValueError(
                f"`kernel_width` = {self.kernel_width} must be at least the number of "
                f"training images, 10 × `train_per_class` = {10 * self.train_per_class} "
                "(the frozen layer must be able to interpolate)."
            )
        if self.relu_learning_rate * 10 > self.adaptive_t1:
            raise ValueError(
                "`relu_learning_rate` must be far below `adaptive_t1` (at least 10 steps)."
            )
        if self.mnist_path is not None and not isinstance(self.mnist_path, str):
            raise ValueError(f"`mnist_path` must be a directory path, got {self.mnist_path!r}.")

    def band_target(self, k):
        return gaussian_band_target(k, self.band_centre, self.band_width)


def quick_config() -> DigitsConfig:
    """The CI size: every code path, fewer images, neurons, seeds and steps."""
    return DigitsConfig(
        activations=("relu", "tanh", "sinc", "designed"),
        train_per_class=4,
        max_test=200,
        num_seeds=2,
        kernel_width=60,
        kernel_scales=(0.5, 1.0),
        adaptive_width=4,
        init_scale=1e-2,
        adaptive_t1=60.0,
        loss_tol=0.1,
        relu_learning_rate=0.2,
        num_times=20,
        num_lines=8,
        line_points=128,
    )
