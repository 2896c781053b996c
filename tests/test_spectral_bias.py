"""The spectral-bias experiment's pieces (issue 13, parts 6-8): the centred lazy init,
its tangent kernel against `Kernel(..., ntk=True)`, the rate fit, the spline check, and
the quick reproduction through the command line (slow)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow.radon as radon
from gradflow.experiments import spectral_bias as sb


def test_centred_nets_start_at_zero_and_their_tangent_kernel_is_the_ntk():
    x = np.linspace(-2, 2, 5)[:, None]
    nets = sb.centred_nets(jax.random.key(0), 2000, 1)
    net = jax.tree_util.tree_map(lambda v: v[0], nets)
    # The pairs cancel up to the rounding of the sum over 2000 terms of size ~1.
    assert np.max(np.abs(np.asarray(net(jnp.asarray(x))))) < 1e-11
    j = sb.tangent_features(net, x)
    assert j.shape == (5, 3 * 2000)
    ntk = radon.Kernel("erf", radon.GaussianWeights(1.0, 1.0), dim=1, ntk=True)
    theta = np.asarray(ntk.gram(x))
    # A Monte-Carlo mean over 1000 independent pairs: relative error ~ 1/√1000 ≈ 0.03.
    np.testing.assert_allclose(j @ j.T / 2000, theta, rtol=0.15, atol=0.05 * np.max(theta))


def test_fit_rate_recovers_a_power_law():
    widths = np.array([100, 400, 1600])
    rng = np.random.default_rng(1)
    gaps = 3.0 * widths[:, None] ** -0.5 * np.exp(0.05 * rng.standard_normal((3, 10)))
    fit = sb.fit_rate(widths, gaps, boots=200)
    assert abs(fit["slope"] + 0.5) < 3 * fit["stderr"] + 1e-3
    assert fit["low"] < fit["slope"] < fit["high"]


def test_cubic_residuals_tell_a_cubic_spline_from_a_smooth_function():
    x = np.array([-1.0, 0.0, 0.5, 1.0])
    grid = np.linspace(-1, 1, 801)
    spline = np.where(grid < 0, grid**3, 2 * grid**3 - grid**2)
    assert sb.cubic_residuals(spline, grid, x)[3] < 1e-12
    assert sb.cubic_residuals(np.sin(5 * grid), grid, x)[3] > 1e-4


def test_config_rejects_bad_input():
    with pytest.raises(ValueError, match="even"):
        sb.SpectralBiasConfig(lazy_widths=(11, 20))
    with pytest.raises(ValueError, match="two widths"):
        sb.SpectralBiasConfig(frozen_widths=(100,))
    with pytest.raises(ValueError, match="among"):
        sb.SpectralBiasConfig(frozen_flow_widths=(7,))


# Slow: every experiment end to end. The fast tests above check the pieces, and
# tests/test_radon_design.py the designed activations; the notebook runs the same
# functions at a smaller size in the default tier.
@pytest.mark.slow
def test_quick_reproduction_writes_every_figure_beside_its_numbers(tmp_path):
    from gradflow._cli import main

    out = tmp_path / "sb"
    assert main(["reproduce", "spectral-bias", "--quick", "--out", str(out), "--no-progress"]) == 0
    for name in ("spectra", "kernel_spline", "width_gap", "ntk", "designed"):
        assert (out / f"{name}.png").stat().st_size > 10_000
        assert (out / f"{name}.csv").exists() or name == "width_gap"
    text = (out / "summary.txt").read_text()
    assert text.startswith("spectral bias") and "gradflow reproduce spectral-bias --quick" in text
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["cubic_residual"] < 1e-9
    assert summary["lazy_failed"] == 0
    for design in summary["designs"].values():
        assert design["max_relative_difference"] < 1e-8
