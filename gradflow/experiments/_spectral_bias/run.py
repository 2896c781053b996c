"""Configuration → engine calls → labelled datasets, for the spectral-bias experiments.

Each function returns an `xarray.Dataset` whose variables are the numbers its figure
shows; `reproduce` writes them beside the figures."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf
import gradflow.radon as radon

from .config import SpectralBiasConfig


# ------------------------------------------------------------------------ spectra


def spectra(config: SpectralBiasConfig):
    """Figure 1's numbers: $\\varphi(z)$ and $\\rho_\\varphi(k)$ (closed form) of every
    activation of `config.activations`, and for the smooth ones the numerical route's
    $\\rho_\\varphi$ and its relative difference from the closed form.

    Variables: `phi (activation, z)`, `rho (activation, k)` (closed form; `inf` in a
    stop band), `rho_numerical`, `relative_difference` (NaN where either is infinite
    or the activation has kinks) and `max_relative_difference (activation)` over the
    k where $|\\hat\\varphi| > 10^{-6}\\max|\\hat\\varphi|$ on the grid (where the
    numerical route's absolute error, ~1e-16 of $\\int|\\varphi^{(q)}|$, is not yet the
    whole answer)."""
    import xarray as xr

    z = np.linspace(-config.z_max, config.z_max, 801)
    k = np.linspace(config.k_max / config.num_k, config.k_max, config.num_k)
    phis, closed, numerical, worst = [], [], [], []
    for name in config.activations:
        act = gf.get_activation(name)
        phis.append(np.asarray(act(jnp.asarray(z))))
        rho = np.asarray(radon.spectral_penalty(act, jnp.asarray(k), dim=config.dim))
        closed.append(rho)
        try:
            # Kinked activations (ReLU, leaky ReLU) and sinc (φ ~ 1/|z|: no derivative
            # is integrable) have no numerical route; the closed form is all there is.
            num = np.asarray(
                radon.spectral_penalty(act, jnp.asarray(k), dim=config.dim, method="numerical")
            )
        except ValueError:
            num = None
        if num is not None:
            magnitude = np.asarray(radon.fourier_magnitude(act, jnp.asarray(k)))
            significant = magnitude > 1e-6 * np.max(magnitude[np.isfinite(magnitude)])
            with np.errstate(invalid="ignore", divide="ignore"):
                diff = np.abs(num / rho - 1)
            diff = np.where(np.isfinite(rho) & np.isfinite(num), diff, np.nan)
            worst.append(float(np.nanmax(np.where(significant, diff, np.nan))))
        else:
            num = np.full_like(k, np.nan)
            worst.append(np.nan)
        numerical.append(num)
    closed, numerical = np.array(closed), np.array(numerical)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(numerical / closed - 1)
    rel = np.where(np.isfinite(closed) & np.isfinite(numerical), rel, np.nan)
    return xr.Dataset(
        {
            "phi": (("activation", "z"), np.array(phis)),
            "rho": (("activation", "k"), closed),
            "rho_numerical": (("activation", "k"), numerical),
            "relative_difference": (("activation", "k"), rel),
            "max_relative_difference": (("activation",), np.array(worst)),
        },
        coords=dict(activation=list(config.activations), z=z, k=k),
        attrs=dict(dim=config.dim),
    )


# ------------------------------------------------------------------------ rates


def fit_rate(widths, gaps, *, boots: int = 2000, seed: int = 0) -> dict:
    """Least squares of $\\log$ gap on $\\log m$ over every seed of every width: the slope,
    its standard error and a bootstrap 95 % interval (seeds resampled within widths)."""
    widths = np.asarray(widths, np.float64)
    gaps = np.asarray(gaps, np.float64)  # (width, seed)
    logm = np.repeat(np.log(widths), gaps.shape[1])
    design = np.stack([np.ones_like(logm), logm], 1)
    logg = np.log(gaps).ravel()
    coef = np.linalg.lstsq(design, logg, rcond=None)[0]
    sigma2 = np.sum((logg - design @ coef) ** 2) / max(len(logg) - 2, 1)
    stderr = float(np.sqrt(sigma2 * np.linalg.inv(design.T @ design)[1, 1]))
    rng = np.random.default_rng(seed)
    slopes = []
    for _ in range(boots):
        pick = rng.integers(0, gaps.shape[1], gaps.shape)
        sample = np.log(np.take_along_axis(gaps, pick, 1)).ravel()
        slopes.append(np.linalg.lstsq(design, sample, rcond=None)[0][1])
    low, high = np.percentile(slopes, [2.5, 97.5])
    return dict(slope=float(coef[1]), stderr=stderr, low=float(low), high=float(high))


# ------------------------------------------------------------------------ frozen regime


def _frozen_units(config: SpectralBiasConfig, index: int, width: int):
    """`(w, b)` of shapes `(seeds, width, 1)`, `(seeds, width)`: $(\\xi, \\gamma)$ from the
    kernel's density, $\\xi = \\pm1$, $\\gamma \\sim U[-R, R]$, as $w = \\xi$, $b = -\\gamma$
    (relu(ξx − γ) = relu(wx + b)). NumPy's generator seeded by `(seed, index)`: the
    frozen regime evaluates many shapes once each, and eager JAX would compile each."""
    rng = np.random.default_rng([config.seed, index])
    shape = (config.num_seeds, width)
    xi = np.where(rng.random(shape) < 0.5, 1.0, -1.0)
    gamma = rng.uniform(-config.frozen_radius, config.frozen_radius, shape)
    return xi[..., None], -gamma


def _frozen_nets(w, b):
    width = b.shape[1]
    return jax.vmap(lambda w, b: gf.TwoLayerNet(jnp.zeros(width), w, b, "relu"))(
        jnp.asarray(w), jnp.asarray(b)
    )


def _hidden(net, x):
    """The hidden layer's outputs $\\Phi$ `(n, m)` of one net (its activation applied)."""
    return np.asarray(net.activation(jnp.asarray(x) @ net.W.T + net.b[None, :]))


def _relu_hidden(w, b, x):
    # The frozen ReLU layer's outputs in NumPy (see `_frozen_units`).
    return np.maximum(np.asarray(x) @ w.T + b[None, :], 0.0)


def _seed(nets, s):
    return jax.tree_util.tree_map(lambda v: v[s], nets)


def cubic_residuals(f, grid, x) -> dict:
    """Max over the intervals between consecutive data points of the residual of a
    least-squares polynomial fit of degree 2 and 3 to `f`, relative to max |f|."""
    scale = np.max(np.abs(f))
    worst = {2: 0.0, 3: 0.0}
    for lo, hi in zip(x[:-1], x[1:]):
        inside = (grid >= lo) & (grid <= hi)
        t = (grid[inside] - lo) / (hi - lo)
        for degree in worst:
            coef = np.polyfit(t, f[inside], degree)
            worst[degree] = max(
                worst[degree], np.max(np.abs(np.polyval(coef, t) - f[inside])) / scale
            )
    return worst


def frozen_regime(config: SpectralBiasConfig, *, progress: bool = False):
    """The kernel regime of a frozen random ReLU layer against the minimum-norm
    interpolant of `Kernel("relu", RadonDensity(UniformOffsets(R)), dim=1)`.

    From $a = 0$ the flow of the outer layer converges to the minimum-norm $a$,
    $\\operatorname{pinv}(\\Phi)y$, whose function is the width-$m$ random-features kernel's
    interpolant; as $m$ grows it tends to the kernel's, $f_\\infty$.

    Variables: `limit_gap (width, seed)` $= \\max_{\\text{grid}}|f_m - f_\\infty|$ of the
    closed-form limit; `flow_gap` and `flow_error` (flow vs its limit) where the flow
    ran (NaN elsewhere); `steps`; `kernel_error` $\\max|K_m - K|$ on the data;
    `f_infinity (grid)`, `x`, `y`; attrs: the cubic-fit residuals of $f_\\infty$ between
    the data (`cubic_residual`, `quadratic_residual`)."""
    import xarray as xr

    x, y = config.frozen_data()
    grid = np.linspace(-1.0, 1.0, config.grid_points)
    offsets = radon.UniformOffsets(radius=config.frozen_radius)
    kernel = radon.Kernel("relu", radon.RadonDensity(offsets), dim=1)
    gram = np.asarray(kernel.gram(x))
    f_inf = np.asarray(radon.minimum_norm_interpolant(kernel, x, y)(grid[:, None]))
    fit = cubic_residuals(f_inf, grid, x[:, 0])
    widths, seeds = config.frozen_widths, config.num_seeds
    shape = (len(widths), seeds)
    limit_gap, flow_gap, flow_error, kernel_error, steps = (
        np.full(shape, np.nan) for _ in range(5)
    )
    for i, width in enumerate(widths):
        w, b = _frozen_units(config, i, width)
        phis = [_relu_hidden(w[s], b[s], x) for s in range(seeds)]
        limits = []
        for s in range(seeds):
            a_limit = np.linalg.pinv(phis[s]) @ y
            limits.append(_relu_hidden(w[s], b[s], grid[:, None]) @ a_limit)
            limit_gap[i, s] = np.max(np.abs(limits[s] - f_inf))
            kernel_error[i, s] = np.max(np.abs(phis[s] @ phis[s].T / width - gram))
        if width in config.frozen_flow_widths:
            lam = min(np.linalg.eigvalsh(p @ p.T / len(y))[0] for p in phis)
            # Converged to e^{-20} ≈ 2e-9 of the start's distance in the slowest mode.
            # Stiff (κ(K) ≈ 2e4 on these points): Tsit5 takes 2-3e5 steps per run.
            sol = gf.flow_ensemble(
                _frozen_nets(w, b), jnp.asarray(x), jnp.asarray(y), t1=20.0 / lam, trainable=("a",),
                coordinates=gf.ScaleFree(layerwise=False), solver=dfx.Tsit5(),
                rtol=1e-10, max_steps=2_000_000, schedule="lockstep", progress=progress,
            )  # fmt: skip
            steps[i] = np.asarray(sol.num_steps)
            for s in range(seeds):
                net = _seed(sol.net, s)
                ok = int(np.asarray(sol.status)[s]) == 0
                f = np.asarray(net(jnp.asarray(grid[:, None]))) if ok else np.nan
                flow_gap[i, s] = np.max(np.abs(f - f_inf))
                flow_error[i, s] = np.max(np.abs(f - limits[s]))
    ds = xr.Dataset(
        {
            "limit_gap": (("width", "seed"), limit_gap),
            "flow_gap": (("width", "seed"), flow_gap),
            "flow_error": (("width", "seed"), flow_error),
            "kernel_error": (("width", "seed"), kernel_error),
            "steps": (("width", "seed"), steps),
            "f_infinity": (("grid",), f_inf),
            "x": (("point",), x[:, 0]),
            "y": (("point",), y),
        },
        coords=dict(width=list(widths), seed=np.arange(seeds), grid=grid),
        attrs=dict(
            cubic_residual=fit[3],
            quadratic_residual=fit[2],
            radius=config.frozen_radius,
            kernel="Kernel('relu', RadonDensity(UniformOffsets(radius)), dim=1)",
        ),
    )
    return ds


# ------------------------------------------------------------------------ lazy regime


def centred_nets(key, width: int, seeds: int, activation="erf"):
    """`seeds` stacked nets of `width` neurons (1-D inputs with bias) in pairs
    $(a_k, w_k, b_k)$, $(-a_k, w_k, b_k)$, entries i.i.d. $N(0, 1)$: $f_0 = 0$ (up to the
    rounding of the sum, ~1e-13) and
    the tangent kernel at init is $m$ times a Monte-Carlo estimate of the NTK
    $\\Theta = K_\\varphi + (x x' + 1)K_{\\varphi'}$ (`Kernel(..., ntk=True)` with
    `GaussianWeights(1, 1)`)."""
    half = width // 2
    ka, kw, kb = jax.random.split(key, 3)
    a = jax.random.normal(ka, (seeds, half))
    w = jax.random.normal(kw, (seeds, half, 1))
    b = jax.random.normal(kb, (seeds, half))

    def pair(a, w, b):
        return gf.TwoLayerNet(
            jnp.concatenate([a, -a]), jnp.concatenate([w, w]), jnp.concatenate([b, b]), activation
        )

    return jax.vmap(pair)(a, w, b)


def tangent_features(net: gf.TwoLayerNet, x) -> np.ndarray:
    """$\\partial f_\\theta(x_i)/\\partial\\theta$ `(n, P)` over $(a, W, b)$, one point at a
    time (memory $O(nP)$)."""
    return np.asarray(_tangent_features(net, jnp.asarray(x)))


@eqx.filter_jit
def _tangent_features(net, x):
    def one(point):
        def f(params):
            a, w, b = params
            return gf.TwoLayerNet(a, w, b, net.activation)(point[None])[0]

        grads = jax.grad(f)((net.a, net.W, net.b))
        return jnp.concatenate([g.reshape(-1) for g in grads])

    return jax.vmap(one)(x)


def lazy_regime(config: SpectralBiasConfig, *, progress: bool = False):
    """All parameters of a wide erf net trained from a centred init (see `centred_nets`)
    against the minimum-norm interpolant of `Kernel("erf", GaussianWeights(1, 1), dim=1,
    ntk=True)`.

    Variables (`width`, `seed`): `gap` $= \\max_{\\text{grid}}|f_{\\text{flow}} - f_\\Theta|$;
    its two parts, `linear_gap` (the linearised model's limit, the interpolant of the
    empirical tangent kernel at init, against $f_\\Theta$: the Monte-Carlo error of the
    kernel) and `nonlinear_gap` (the flow against that linearised limit: how far from
    lazy the flow is); `relative_move` $\\|\\theta_\\infty - \\theta_0\\|/\\|\\theta_0\\|$;
    `steps`; `f_ntk (grid)` and the trained function of seed 0, `f_flow_seed0 (width, grid)`."""
    import xarray as xr

    x, y = config.lazy_data()
    h = config.lazy_half_width
    grid = np.linspace(-h, h, config.grid_points)
    kernel = radon.Kernel("erf", radon.GaussianWeights(1.0, 1.0), dim=1, ntk=True)
    interpolant = radon.minimum_norm_interpolant(kernel, x, y)
    f_ntk = np.asarray(interpolant(grid[:, None]))
    widths, seeds = config.lazy_widths, config.num_seeds
    shape = (len(widths), seeds)
    gap, linear_gap, nonlinear_gap, move, steps, residual = (
        np.full(shape, np.nan) for _ in range(6)
    )
    f_first = np.full((len(widths), len(grid)), np.nan)
    for i, width in enumerate(widths):
        nets = centred_nets(jax.random.key(config.seed * 1000 + 500 + i), width, seeds)
        grams, lins = [], []
        for s in range(seeds):
            j_data = tangent_features(_seed(nets, s), x)
            j_grid = tangent_features(_seed(nets, s), grid[:, None])
            gram = j_data @ j_data.T
            grams.append(gram)
            lins.append(j_grid @ (j_data.T @ np.linalg.solve(gram, y)))
        lam = min(np.linalg.eigvalsh(g / len(y))[0] for g in grams)
        # Converged to e^{-14} ≈ 1e-6 of the start's distance in the slowest mode of the
        # linearised flow (the mean loss: the tangent kernel over n).
        sol = gf.flow_ensemble(
            nets, jnp.asarray(x), jnp.asarray(y), t1=14.0 / lam, solver=dfx.Tsit5(),
            rtol=config.lazy_rtol, max_steps=1_000_000, schedule="lockstep", progress=progress,
        )  # fmt: skip
        steps[i] = np.asarray(sol.num_steps)
        for s in range(seeds):
            if int(np.asarray(sol.status)[s]) != 0:
                continue
            net, net0 = _seed(sol.net, s), _seed(nets, s)
            f = np.asarray(net(jnp.asarray(grid[:, None])))
            if s == 0:
                f_first[i] = f
            gap[i, s] = np.max(np.abs(f - f_ntk))
            linear_gap[i, s] = np.max(np.abs(lins[s] - f_ntk))
            nonlinear_gap[i, s] = np.max(np.abs(f - lins[s]))
            theta = np.concatenate([np.ravel(v) for v in (net.a, net.W, net.b)])
            theta0 = np.concatenate([np.ravel(v) for v in (net0.a, net0.W, net0.b)])
            move[i, s] = np.linalg.norm(theta - theta0) / np.linalg.norm(theta0)
            residual[i, s] = np.max(np.abs(np.asarray(net(jnp.asarray(x))) - y))
    return xr.Dataset(
        {
            "gap": (("width", "seed"), gap),
            "linear_gap": (("width", "seed"), linear_gap),
            "nonlinear_gap": (("width", "seed"), nonlinear_gap),
            "relative_move": (("width", "seed"), move),
            "train_residual": (("width", "seed"), residual),
            "steps": (("width", "seed"), steps),
            "f_ntk": (("grid",), f_ntk),
            "f_flow_seed0": (("width", "grid"), f_first),
            "x": (("point",), x[:, 0]),
            "y": (("point",), y),
        },
        coords=dict(width=list(widths), seed=np.arange(seeds), grid=grid),
        attrs=dict(
            kernel="Kernel('erf', GaussianWeights(1.0, 1.0), dim=1, ntk=True)",
            condition_number=float(interpolant.condition_number),
            rtol=config.lazy_rtol,
        ),
    )


# ------------------------------------------------------------------------ designs


def designed_activation(config: SpectralBiasConfig, which: str, *, register: bool = True):
    """The activation designed from `config`'s `"bandpass"` or `"power_law"` target,
    registered under the name `f"designed_{which}"` (`register=True`)."""
    if which == "bandpass":
        target, period = config.bandpass_rho, 300.0
    elif which == "power_law":
        target, period = config.power_law_rho, 200.0
    else:
        raise ValueError(f"`which` must be 'bandpass' or 'power_law', got {which!r}.")
    name = f"designed_{which}"
    phi = radon.design_activation(target, dim=config.dim, period=period, name=name)
    # Registered by name: from here on every gradflow function finds it as `name`, and
    # `spectral_penalty` goes through the numerical route (no closed form is registered).
    if register:
        gf.register_activation(name, lambda: phi)
    return phi, target


def designs(config: SpectralBiasConfig):
    """Each designed activation against its target, and a network using it.

    Variables per `design` (`bandpass`, `power_law`): `phi (design, z)`;
    `rho_target`, `rho_measured (design, k)` (the numerical route of
    `spectral_penalty` on the activation *by its registered name*),
    `relative_difference`; and, on the data of `design_data`, the kernel
    `Kernel(name, RadonDensity(UniformOffsets(R)), dim=1)`'s interpolant `f_kernel
    (design, grid)`, a random-features net's limit `f_network` (width `design_width`,
    hidden units from the same density, outer layer from 0 to its minimum-norm
    solution), `network_gap (design)` (sup over the data's interval, relative to
    $\\max|y|$), and `band_fraction (design)`: the fraction of the
    interpolant's spectral energy where $|\\hat\\varphi| > 10^{-3}\\max$ (its pass band)."""
    import xarray as xr

    k = np.linspace(config.k_max / config.num_k, config.k_max, config.num_k)
    z = np.linspace(-3 * config.z_max, 3 * config.z_max, 1201)
    x, y = config.design_data()
    grid = np.linspace(-config.design_radius / 2, config.design_radius / 2, 1024)
    out = {name: [] for name in ("phi", "target", "measured", "rel", "f_kernel", "f_network")}
    gaps, fractions, worst, conditions = [], [], [], []
    names = ("bandpass", "power_law")
    for i, which in enumerate(names):
        phi, target = designed_activation(config, which)
        name = phi.name
        out["phi"].append(np.asarray(gf.get_activation(name)(jnp.asarray(z))))
        rho_target = target(k)
        magnitude = np.asarray(
            # The window is the design's support: φ is zero beyond half a period.
            radon.numerical_fourier_magnitude(name, jnp.asarray(k), half_width=phi.half_period)
        )
        rho = np.abs(k) ** (config.dim - 1) / magnitude**2
        rel = np.abs(rho / rho_target - 1)
        band = np.sqrt(np.abs(k) ** (config.dim - 1) / rho_target)
        significant = band > 1e-6 * np.max(band)
        worst.append(float(np.max(rel[significant])))
        out["target"].append(rho_target)
        out["measured"].append(rho)
        out["rel"].append(np.where(significant, rel, np.nan))
        density = radon.RadonDensity(radon.UniformOffsets(radius=config.design_radius))
        kernel = radon.Kernel(name, density, dim=1, num_nodes=config.design_nodes)
        interpolant = radon.minimum_norm_interpolant(kernel, x, y, throw=False)
        conditions.append(float(interpolant.condition_number))
        f_kernel = np.asarray(interpolant(grid[:, None]))
        out["f_kernel"].append(f_kernel)
        # The interpolant's spectrum: the share of its energy inside the pass band.
        spectrum = np.abs(np.fft.rfft(f_kernel)) ** 2
        freqs = 2 * np.pi * np.fft.rfftfreq(len(grid), grid[1] - grid[0])
        passband = np.sqrt(np.abs(freqs) ** (config.dim - 1) / target(freqs)) > 1e-3 * np.max(band)
        fractions.append(float(spectrum[passband].sum() / spectrum.sum()))
        # A network with this activation: hidden units from the kernel's density.
        key = jax.random.key(config.seed * 1000 + 900 + i)
        k_sign, k_offset = jax.random.split(key)
        width = config.design_width
        xi = jnp.where(jax.random.bernoulli(k_sign, 0.5, (width,)), 1.0, -1.0)
        r = config.design_radius
        gamma = jax.random.uniform(k_offset, (width,), minval=-r, maxval=r)
        net = gf.TwoLayerNet(jnp.zeros(width), xi[:, None], -gamma, name)
        a = np.linalg.pinv(_hidden(net, x)) @ y
        f_net = _hidden(net, grid[:, None]) @ a
        out["f_network"].append(f_net)
        inside = np.abs(grid) <= config.design_half_width
        gaps.append(float(np.max(np.abs(f_net - f_kernel)[inside]) / np.max(np.abs(y))))
    return xr.Dataset(
        {
            "phi": (("design", "z"), np.array(out["phi"])),
            "rho_target": (("design", "k"), np.array(out["target"])),
            "rho_measured": (("design", "k"), np.array(out["measured"])),
            "relative_difference": (("design", "k"), np.array(out["rel"])),
            "max_relative_difference": (("design",), np.array(worst)),
            "f_kernel": (("design", "grid"), np.array(out["f_kernel"])),
            "f_network": (("design", "grid"), np.array(out["f_network"])),
            "network_gap": (("design",), np.array(gaps)),
            "band_fraction": (("design",), np.array(fractions)),
            "condition_number": (("design",), np.array(conditions)),
            "x": (("point",), x[:, 0]),
            "y": (("point",), y),
        },
        coords=dict(design=list(names), k=k, z=z, grid=grid),
        attrs=dict(
            bandpass=np.asarray(config.bandpass),
            power_s=config.power_s,
            power_corner=config.power_corner,
            power_cutoff=config.power_cutoff,
            design_width=config.design_width,
            design_radius=config.design_radius,
        ),
    )
