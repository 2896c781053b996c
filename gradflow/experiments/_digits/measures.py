"""The frequency-resolved measures of the digits experiment (our definitions).

**Image frequencies (the DCT filter).** The orthonormal 2-D DCT-II of an $L\\times L$
image, $c_{uv} = \\sum_{pq} C_{up} C_{vq} v_{pq}$ with
$C_{up} = \\alpha_u \\cos(\\pi(2p+1)u/2L)$, $\\alpha_0 = \\sqrt{1/L}$,
$\\alpha_{u>0} = \\sqrt{2/L}$.
A coefficient's *band* is $u + v \\in \\{0, \\dots, 2L-2\\}$. The low-pass image at cut-off
$c$ keeps the bands $\\le c$, the high-pass image the bands $> c$; the two add up to the
image (`dct_filter`). The filters act on the centred, scaled images (see
`data.Preprocessing`), so they are linear maps of the network's input. The
frequency-resolved error is the test accuracy (and error rate) on low-pass and on
high-pass test images against $c$.

**Input-space frequencies (spectra along lines).** The paper's $\\rho_\\varphi(k)$ is a
penalty on the Fourier content of the learned function $f$ in input space. Along a line
$x(s) = x_0 + s\\,u$ through a test input $x_0$ in a random unit direction $u$, a neuron
contributes $a\\,\\varphi(s\\,w\\cdot u + w\\cdot x_0 + b)$: its frequencies are those of
$\\varphi$ scaled by $w\\cdot u$. `line_spectrum` samples each output of $f$ on such lines,
removes the mean, applies a Hann window, and averages $|\\mathrm{FFT}|^2$ over lines and
outputs; `high_frequency_fraction` is the share of that energy above a frequency
$k_c$ (in radians per unit input distance; the inputs have mean squared norm 1).
"""

import numpy as np


def dct_matrix(side: int) -> np.ndarray:
    """The orthonormal DCT-II matrix $C$ `(side, side)`: $C C^T = I$."""
    p = np.arange(side)
    u = p[:, None]
    c = np.cos(np.pi * (2 * p[None, :] + 1) * u / (2 * side))
    c *= np.where(u == 0, np.sqrt(1.0 / side), np.sqrt(2.0 / side))
    return c


def dct2(images) -> np.ndarray:
    """The 2-D DCT of images `(..., L, L)`."""
    images = np.asarray(images, np.float64)
    c = dct_matrix(images.shape[-1])
    return c @ images @ c.T


def idct2(coefficients) -> np.ndarray:
    """The inverse of `dct2`."""
    coefficients = np.asarray(coefficients, np.float64)
    c = dct_matrix(coefficients.shape[-1])
    return c.T @ coefficients @ c


def bands(side: int) -> np.ndarray:
    """The band $u + v$ of each DCT coefficient, `(side, side)`."""
    u = np.arange(side)
    return u[:, None] + u[None, :]


def dct_filter(images, cutoff: int, *, keep: str = "low") -> np.ndarray:
    """Images `(N, L, L)` or flattened `(N, L*L)` with only the DCT bands $u + v \\le$
    `cutoff` (`keep="low"`) or $>$ `cutoff` (`keep="high"`); same shape as given.
    Low plus high is the image (to rounding); the filter is an orthogonal projection."""
    images = np.asarray(images, np.float64)
    flat = images.ndim == 2
    side = int(round(np.sqrt(images.shape[-1]))) if flat else images.shape[-1]
    if flat and side * side != images.shape[-1]:
        raise ValueError(f"flattened images must be square, got {images.shape[-1]} pixels.")
    square = images.reshape(len(images), side, side)
    if keep not in ("low", "high"):
        raise ValueError(f"`keep` must be 'low' or 'high', got {keep!r}.")
    mask = bands(side) <= cutoff
    if keep == "high":
        mask = ~mask
    out = idct2(dct2(square) * mask)
    return out.reshape(images.shape)


def band_energy(images) -> np.ndarray:
    """The mean over images of the DCT energy in each band $u+v$, `(2L-1,)`; it sums to the
    mean squared norm of the images (Parseval)."""
    images = np.asarray(images, np.float64)
    side = int(round(np.sqrt(images.shape[-1]))) if images.ndim == 2 else images.shape[-1]
    coefficients = dct2(images.reshape(len(images), side, side))
    energy = np.mean(coefficients**2, 0)
    b = bands(side)
    return np.array([energy[b == k].sum() for k in range(2 * side - 1)])


def accuracy(outputs, labels) -> float:
    """The fraction of inputs whose largest output is their label."""
    return float(np.mean(np.argmax(np.asarray(outputs), -1) == np.asarray(labels)))


def random_lines(inputs, num_lines: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """`(origins (L, d), directions (L, d))`: `num_lines` inputs drawn without replacement
    and directions uniform on the unit sphere of $\\mathbb{R}^d$."""
    inputs = np.asarray(inputs, np.float64)
    rng = np.random.default_rng(seed)
    origins = inputs[rng.choice(len(inputs), num_lines, replace=num_lines > len(inputs))]
    directions = rng.standard_normal(origins.shape)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return origins, directions


def line_points(origins, directions, half_length: float, num_points: int):
    """`(s (P,), points (L, P, d))`: $x_0 + s u$ on $s \\in [-h, h)$, spacing $2h/P$."""
    s = -half_length + 2 * half_length * np.arange(num_points) / num_points
    return s, origins[:, None, :] + s[None, :, None] * directions[:, None, :]


def line_spectrum(values, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """`(k, power)`: the mean over lines (and outputs) of the Hann-windowed power spectrum
    of `values (L, P)` or `(L, P, K)` sampled at `spacing` along each line, the mean of
    each line removed first; `k` in radians per unit length, `power` normalised to sum
    to 1 (all zero if the function is constant on every line)."""
    values = np.asarray(values, np.float64)
    if values.ndim == 3:
        values = np.moveaxis(values, 2, 1).reshape(-1, values.shape[1])
    values = values - values.mean(1, keepdims=True)
    window = np.hanning(values.shape[1] + 1)[:-1]  # periodic Hann
    power = np.mean(np.abs(np.fft.rfft(values * window, axis=1)) ** 2, 0)
    k = 2 * np.pi * np.fft.rfftfreq(values.shape[1], spacing)
    total = power.sum()
    return k, (power / total if total > 0 else power)


def high_frequency_fraction(k, power, cutoff: float) -> float:
    """The share of `power` at frequencies $k >$ `cutoff`."""
    total = np.sum(power)
    return float(np.sum(power[np.asarray(k) > cutoff]) / total) if total > 0 else 0.0
