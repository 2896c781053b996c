"""The configuration of the spectral-bias experiments (Sahs, Pyle, Anselmi & Patel,
arXiv:2503.10587): which activations, data, widths, seeds and designs."""

import math

import equinox as eqx
import numpy as np

from ..._misc import check_positive_int


# Every built-in activation but the identity (whose ρ is infinite at every k ≠ 0: a
# linear net can only fit affine functions, there is nothing to plot).
ACTIVATIONS = (
    "relu",
    "leaky_relu",
    "softplus",
    "gelu",
    "tanh",
    "erf",
    "gaussian",
    "rational",
    "sinc",
    "sinc2",
)


def bandpass_target(k, low: float = 1.0, high: float = 3.0, width: float = 0.25):
    """A band-pass penalty: $\\rho = 1/B(k)^2$ with
    $B = \\tfrac12[\\tanh\\frac{k^2 - k_1^2}{2k_1 w} - \\tanh\\frac{k^2 - k_2^2}{2k_2 w}]$:
    $\\rho \\approx 1$ on $k_1 < |k| < k_2$ (`low`, `high`), edges of width about $w$,
    growing like $e^{2|k|^2/\\dots}$ outside ($\\infty$ where $B$ underflows). Written in
    $k^2$ so that $|\\hat\\varphi|$ is smooth and even, and $\\varphi$ decays fast."""
    k = np.asarray(k, np.float64)
    b = 0.5 * (
        np.tanh((k**2 - low**2) / (2 * low * width))
        - np.tanh((k**2 - high**2) / (2 * high * width))
    )
    with np.errstate(divide="ignore"):
        return np.where(b > 0, 1 / np.maximum(b, 1e-300) ** 2, np.inf)


def power_law_target(k, s: float = 1.5, corner: float = 0.5, cutoff: float = 8.0):
    """A power-law penalty $\\rho \\approx |k|^{2s}$: $(k^2 + k_0^2)^{s}\\,e^{2(k/k_c)^8}$,
    flat below the corner $k_0$ (so that $\\hat\\varphi(0)$ is finite and $\\varphi$ decays)
    and cut off above $k_c$; within 1 % of $|k|^{2s}$ on about $[3.5k_0, 0.5k_c]$
    (`power_law_band`)."""
    k = np.asarray(k, np.float64)
    with np.errstate(over="ignore"):
        return (k**2 + corner**2) ** s * np.exp(2 * (k / cutoff) ** 8)


class SpectralBiasConfig(eqx.Module):
    """All of the spectral-bias reproduction's settings (defaults: the full run).

    **Spectra (Figure 1).** `activations`; $\\rho_\\varphi$ on `num_k` points of
    $(0,$ `k_max`$]$ and $\\varphi$ on $[-$`z_max`$,$ `z_max`$]$; `dim` $= d$.

    **Kernel regime (frozen hidden layer).** `frozen_points` data on $[-1, 1]$ (the
    points of `benchmarks/kernel_regime.py`), ReLU hidden units $\\xi = \\pm1$,
    $\\gamma \\sim U[-R, R]$ (`frozen_radius` $R$), outer layer trained from $a = 0$.
    `frozen_widths` × `num_seeds`: the flow's closed-form limit $\\operatorname{pinv}(\\Phi)y$
    at every width, the flow itself (`trainable=("a",)`, Tsit5) at `frozen_flow_widths`.

    **Lazy (NTK) regime.** `lazy_points` data on $[-$`lazy_half_width`$, \\dots]$, erf
    units, all of $(a, W, b)$ trained from a centred init: neurons in pairs
    $(a_k, w_k, b_k)$, $(-a_k, w_k, b_k)$ with i.i.d. $N(0, 1)$ entries, so $f_0 = 0$
    up to rounding; `lazy_widths` (total neurons) × `num_seeds`, Tsit5 at `lazy_rtol`.

    **Designed activations.** The band-pass and power-law targets (`bandpass_target`,
    `power_law_target` with `power_s`), FFT periods, and the random-features check:
    `design_points` data on $[-$`design_half_width`$, \\dots]$, offsets
    $U[-$`design_radius`$, \\dots]$, width `design_width`.
    """

    activations: tuple[str, ...] = ACTIVATIONS
    dim: int = 1
    k_max: float = 8.0
    num_k: int = 400
    z_max: float = 8.0
    frozen_points: int = 8
    frozen_radius: float = 1.5
    frozen_widths: tuple[int, ...] = (100, 300, 1000, 3000, 10000)
    # The a-only flow is stiff here (κ(K) ≈ 2e4: 2-3e5 Tsit5 steps per run); its limit
    # pinv(Φ)y is what the flow reaches (to ≤ 4e-8 at m = 100, 300 in
    # `benchmarks/kernel_regime.py`), so by default only the limit is computed.
    frozen_flow_widths: tuple[int, ...] = ()
    lazy_points: int = 6
    lazy_half_width: float = 2.0
    lazy_widths: tuple[int, ...] = (100, 200, 400, 800, 1600)
    lazy_rtol: float = 1e-8
    num_seeds: int = 10
    grid_points: int = 2001
    bandpass: tuple[float, float, float] = (1.0, 3.0, 0.25)
    power_s: float = 1.5
    power_corner: float = 0.5
    power_cutoff: float = 8.0
    design_points: int = 8
    design_half_width: float = 6.0
    design_radius: float = 20.0
    design_width: int = 4000
    design_nodes: int = 600
    seed: int = 0

    def __check_init__(self):
        for name in (
            "dim", "num_k", "frozen_points", "lazy_points", "num_seeds", "grid_points",
            "design_points", "design_width", "design_nodes",
        ):  # fmt: skip
            check_positive_int(name, getattr(self, name))
        for name in ("k_max", "z_max", "frozen_radius", "lazy_half_width", "lazy_rtol",
                     "power_s", "power_corner", "power_cutoff", "design_half_width",
                     "design_radius"):  # fmt: skip
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")
        for name in ("frozen_widths", "lazy_widths"):
            widths = getattr(self, name)
            if len(widths) < 2 or any(not isinstance(m, int) or m < 2 for m in widths):
                raise ValueError(
                    f"`{name}` must list at least two widths ≥ 2 (a rate needs two), got "
                    f"{widths!r}."
                )
        if any(m % 2 for m in self.lazy_widths):
            raise ValueError(
                f"`lazy_widths` must be even (the centred init pairs neurons), got "
                f"{self.lazy_widths!r}."
            )
        if not set(self.frozen_flow_widths) <= set(self.frozen_widths):
            raise ValueError("`frozen_flow_widths` must be among `frozen_widths`.")
        if self.num_seeds < 2:
            raise ValueError("`num_seeds` must be at least 2 (a spread needs two).")
        low, high, width = self.bandpass
        if not 0 < low < high or not width > 0:
            raise ValueError(
                f"`bandpass` must be (low, high, width), 0 < low < high, got {self.bandpass}."
            )

    def bandpass_rho(self, k):
        low, high, width = self.bandpass
        return bandpass_target(k, low, high, width)

    def power_law_rho(self, k):
        return power_law_target(k, self.power_s, self.power_corner, self.power_cutoff)

    def frozen_data(self):
        """`(x (n, 1), y (n,))`: n slightly uneven points of $[-1, 1]$, $y = \\sin 3x + x/2$."""
        n = self.frozen_points
        x = np.sort(np.linspace(-1.0, 1.0, n) + 0.05 * np.sin(7.0 * np.arange(n)))
        x = np.clip(x, -1.0, 1.0)
        return x[:, None], np.sin(3.0 * x) + 0.5 * x

    def lazy_data(self):
        """The frozen regime's points and targets, inputs scaled to $[-h, h]$
        (`lazy_half_width`): with $w \\sim N(0, 1)$ that is the NTK of $\\sigma_w = h$ on
        $[-1, 1]$, better conditioned."""
        n = self.lazy_points
        x = np.sort(np.linspace(-1.0, 1.0, n) + 0.05 * np.sin(7.0 * np.arange(n)))
        x = np.clip(x, -1.0, 1.0)
        return self.lazy_half_width * x[:, None], np.sin(3.0 * x) + 0.5 * x

    def design_data(self):
        """`design_points` evenly spaced points of $[-h, h]$, $y = \\cos(2x) + $ a ramp."""
        x = np.linspace(-self.design_half_width, self.design_half_width, self.design_points)
        return x[:, None], np.cos(2.0 * x) + 0.1 * x


def quick_config() -> SpectralBiasConfig:
    """The CI size: the same code paths, fewer activations, widths and seeds."""
    return SpectralBiasConfig(
        activations=("relu", "tanh", "gaussian", "sinc", "sinc2"),
        num_k=120,
        frozen_widths=(50, 200, 800),
        lazy_widths=(20, 60),
        num_seeds=3,
        grid_points=401,
        design_width=400,
        design_nodes=200,
    )
