"""The optimization-threshold experiment (Boursier & Flammarion, arXiv:2410.02348): its
measures on hand-built cases with known answers, its configuration errors (default tier,
NumPy only), and the flows themselves: a resumed sweep recomputes nothing, the exact flow
against gradient descent, the quick reproduction (slow tier)."""

import math

import jax
import numpy as np
import pandas as pd
import pytest

import gradflow as gf
from gradflow.experiments import optimization_threshold as ot


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_distance_of_an_exactly_linear_network_is_zero():
    # relu(u·x) − relu(−u·x) = u·x: paired neurons (w, −w) with a_j = −a_j' realise the
    # linear function x ↦ a·u·x exactly, at any direction and scale.
    rng = _rng()
    for d in (2, 5):
        u = rng.standard_normal(d)
        W = np.stack([u, -u, 0.3 * u, -0.3 * u])
        a = np.array([1.5, -1.5, 2.0, -2.0])
        beta = (1.5 + 0.6) * u
        for inputs in ("gaussian", "ball"):
            # The closed form subtracts O(‖β‖²) terms: rounding leaves a square of about
            # 1e-16‖β‖², a distance of about 1e-8‖β‖ (against O(‖β‖) for any other line).
            distance = ot.function_distance(a, W, beta, inputs=inputs)
            assert distance <= 1e-7 * np.linalg.norm(beta)
            # ... and the distance to another line is that line's: ‖(β − β')·x‖ = √c‖β − β'‖.
            other = beta + np.eye(d)[0]
            c = ot.second_moment(inputs, d)
            assert ot.function_distance(a, W, other, inputs=inputs) == pytest.approx(
                math.sqrt(c), rel=1e-12
            )


@pytest.mark.parametrize("inputs", ["gaussian", "ball"])
def test_distance_closed_form_against_monte_carlo(inputs):
    rng = _rng(1)
    d = 4
    a, W, beta = rng.standard_normal(3), rng.standard_normal((3, d)), rng.standard_normal(d)
    x = ot.sample_inputs(rng, 200_000, d, inputs)
    squares = (ot.relu_net(a, W, x) - x @ beta) ** 2
    mc, stderr = squares.mean(), squares.std() / math.sqrt(len(squares))
    # 5 standard errors of the Monte Carlo mean: fails by chance with probability < 1e-6.
    assert ot.function_distance(a, W, beta, inputs=inputs) ** 2 == pytest.approx(mc, abs=5 * stderr)


def _symmetric_sample(d, seed=2):
    """x_i and −x_i both in the sample, y = β·x exactly: then G_n(w) = Σ̂β/2 for every w
    (each pair contributes y_i x_i whichever side w is on), so h(w) = w·G_n(w) peaks at
    D+ = Σ̂β/‖Σ̂β‖ and bottoms out at −D+."""
    rng = _rng(seed)
    half = rng.standard_normal((7, d))
    x = np.concatenate([half, -half])
    beta = rng.standard_normal(d)
    return x, x @ beta, beta


@pytest.mark.parametrize("d", [2, 4])
def test_direction_field_and_extremal_directions_of_a_symmetric_sample(d):
    x, y, beta = _symmetric_sample(d)
    expected = (x.T @ x / len(x)) @ beta / 2
    w = _rng(3).standard_normal((20, d))
    np.testing.assert_allclose(ot.direction_field(w, x, y), np.broadcast_to(expected, (20, d)),
                               rtol=1e-12, atol=1e-14)  # fmt: skip
    D_plus, D_minus, values = ot.extremal_directions(x, y)
    unit = expected / np.linalg.norm(expected)
    assert D_plus @ unit >= 1 - 1e-9
    assert D_minus @ unit <= -1 + 1e-9
    np.testing.assert_allclose(values, [np.linalg.norm(expected), -np.linalg.norm(expected)],
                               rtol=1e-9)  # fmt: skip


def test_extremal_directions_of_a_one_sided_sample():
    # All labels positive and every x in one half-plane (angles 10°..80°): h(w) =
    # mean y_i relu(w·x_i) is maximal along Σ y_i x_i (every point active), and its
    # minimum over the circle is 0, reached on the whole arc where no point is active.
    angles = np.radians(np.linspace(10, 80, 8))
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    y = np.linspace(1.0, 2.0, 8)
    D_plus, D_minus, values = ot.extremal_directions(x, y)
    g = y @ x
    assert D_plus @ (g / np.linalg.norm(g)) >= 1 - 1e-9
    assert values[1] == pytest.approx(0.0, abs=1e-12)
    assert np.all(x @ D_minus <= 1e-9)


def test_interpolating_network_is_flagged():
    rng = _rng(4)
    n, d, sigma = 12, 3, 0.3
    x = rng.standard_normal((n, d))
    y = x @ np.ones(d) + sigma * rng.standard_normal(n)
    # A net of n random neurons interpolates: solve the n×n feature system for a.
    W = rng.standard_normal((n, d))
    a = np.linalg.solve(np.maximum(x @ W.T, 0), y)
    train = ot.train_mse(ot.relu_net(a, W, x), y)
    assert train < 1e-20
    assert ot.is_interpolating(train, sigma, 1e-2)
    # The least-squares line does not: it keeps about σ²(1 − d/n).
    ols = ot.ols_fit(x, y)
    assert not ot.is_interpolating(ot.train_mse(x @ ols, y), sigma, 1e-2)
    with pytest.raises(ValueError, match="noise"):
        ot.is_interpolating(train, 0.0, 1e-2)


def test_clusters_of_a_hand_built_net():
    a = np.array([1.0, 0.8, -1.0, 1.0, 1e-9, 2.0])
    W = np.array([[1, 0], [1, 0.02], [1, 0], [0, 1], [0.5, 0.5], [-1, 0.01]], float)
    # {0, 1} (2° apart, same sign), {2} (same direction as 0 but a < 0), {3}, {5};
    # neuron 4 carries 1e-9 of the weight and is not counted.
    assert ot.count_clusters(a, W, angle_deg=5.0) == 4
    assert ot.count_clusters(a, W, angle_deg=0.5) == 5


def test_threshold_and_growth_law_on_known_fractions():
    sizes = [10, 20, 40, 80]
    assert ot.interpolating_fraction_crossing(sizes, [1, 1, 0, 0]) == pytest.approx(
        math.sqrt(20 * 40)
    )
    assert ot.interpolating_fraction_crossing(sizes, [1, 0.75, 0.25, 0]) == pytest.approx(
        math.sqrt(20 * 40)
    )
    assert math.isnan(ot.interpolating_fraction_crossing(sizes, [1, 1, 1, 0.9]))
    assert ot.interpolating_fraction_crossing(sizes, [0, 0, 0, 0]) == 10
    flags = np.array([[1, 1, 1], [1, 1, 1], [0, 0, 0], [0, 0, 0]], float)
    point, reps = ot.bootstrap_threshold(sizes, flags, num_resamples=50)
    assert point == pytest.approx(math.sqrt(20 * 40))
    np.testing.assert_allclose(reps, point)  # no spread where every seed agrees
    dims = np.array([2, 3, 4, 6])
    fit = ot.fit_power_law(dims, 1.7 * dims**2.5)
    assert fit["exponent"] == pytest.approx(2.5) and fit["prefactor"] == pytest.approx(1.7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(inputs="uniform"), "inputs"),
        (dict(noise=-0.1), "noise"),
        (dict(init_scale=0.0), "init_scale"),
        (dict(interpolation_tol=2.0), "interpolation_tol"),
        (dict(loss_sizes=(20, 10)), "loss_sizes"),
        (dict(widths=()), "widths"),
        (dict(num_seeds=1), "num_seeds"),
        (dict(num_seeds=5, width_seeds=6), "width_seeds"),
        (dict(alignment_growth=0.5), "alignment_growth"),
        (dict(teacher=(1.0, 0.0)), "teacher"),
        (dict(t_first=1e4, t1=1e3), "t_first"),
        (dict(compare_width=7), "compare_width"),
    ],
)
def test_bad_configs_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ot.ThresholdConfig(**kwargs)


def test_config_data_and_teacher():
    config = ot.ThresholdConfig(inputs="ball", noise=0.5, teacher_norm=2.0)
    x, y = config.data(3, 50, seed=1)
    assert x.shape == (50, 3) and y.shape == (50,)
    assert np.all(np.linalg.norm(x, axis=1) <= 1)
    np.testing.assert_array_equal(config.data(3, 50, seed=1)[0], x)  # reproducible
    assert not np.array_equal(config.data(3, 50, seed=2)[0], x)  # seeds differ
    assert np.linalg.norm(config.beta(7)) == pytest.approx(2.0)
    assert config.threshold_sizes(4)[0] >= 2


# ---- slow tier: the flows ----------------------------------------------------------------


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_recomputing(tmp_path):
    config = ot.quick_config()
    (m, specs), *_ = ot.blocks(config).items()
    first = ot.run_group(config, m, specs, checkpoint_dir=tmp_path)
    chunks = sorted((tmp_path / f"relu_m{m}").glob("chunk_*.npz"))
    runs = sum(len(sizes) for _, sizes in specs) * config.num_seeds
    assert len(chunks) == -(-runs // config.chunk_size) >= 2
    # An interruption after the first half of the chunks: the second half is gone.
    keep, lost = chunks[: len(chunks) // 2], chunks[len(chunks) // 2 :]
    stamps = {p: p.stat().st_mtime_ns for p in keep}
    for p in lost:
        p.unlink()
    again = ot.run_group(config, m, specs, checkpoint_dir=tmp_path)
    assert {p: p.stat().st_mtime_ns for p in keep} == stamps  # read, not recomputed
    assert all(p.exists() for p in lost)  # the lost half was run again
    for d in first:
        for name in ("train_mse", "test_mse", "stationarity", "W_t", "interpolating"):
            np.testing.assert_array_equal(again[d][name].values, first[d][name].values)


@pytest.mark.slow
def test_exact_flow_against_descent_at_two_step_sizes():
    # d = 2, n = 20 noisy points, m = 6 balanced neurons from λ = 1e-2: the exact flow
    # crosses breakplanes and pins data points on its way (45 events, 12 of them pins, when
    # this test was written; checked below). Gradient descent follows it to O(η): halving
    # η should about halve the largest distance over the saved times.
    config = ot.ThresholdConfig(init_scale=1e-2)
    x, y = config.data(2, 20, seed=1)
    keys = jax.random.split(jax.random.key(1), 1)
    net = jax.tree_util.tree_map(lambda v: v[0], ot.initial_nets(config, 2, 6, keys))
    ts = np.linspace(0.0, 100.0, 51)
    flow = gf.gradient_flow(net, x, y, t1=100.0, ts=ts, kinks="exact", max_events=512)
    events = flow.observables["events"]
    kinds = np.asarray(events.kind)[: int(events.num_events)]
    assert np.sum(kinds == int(gf.EventKind.CROSSING)) >= 10
    assert np.sum(kinds == int(gf.EventKind.PIN)) >= 3
    gaps = []
    for eta in (0.02, 0.01):
        gd = gf.gradient_descent(net, x, y, learning_rate=eta, t1=100.0, ts=ts)
        gaps.append(float(np.max(np.asarray(gf.distance_to_flow(gd, flow)))))
    # First order: the ratio is 2 up to O(η) corrections; a band of ±25 % around it.
    ratio = gaps[0] / gaps[1]
    assert 1.6 <= ratio <= 2.5, (gaps, ratio)
    assert gaps[1] < 0.05


@pytest.mark.slow
def test_quick_reproduction(tmp_path):
    config = ot.quick_config()
    summary = ot.reproduce(tmp_path, quick=True, checkpoint_dir=tmp_path / "checkpoints")
    for name in ("loss_vs_n", "threshold", "threshold_growth", "alignment", "directions",
                 "methods"):  # fmt: skip
        assert (tmp_path / f"{name}.png").exists() and (tmp_path / f"{name}.csv").exists()
    assert (tmp_path / "runs.csv").exists() and (tmp_path / "summary.txt").exists()
    runs = sum(len(s) for specs in ot.blocks(config).values() for _, s in specs)
    assert summary["runs"] == runs * config.num_seeds
    assert "n*" in ot.summary_text(summary)
    # The quick config stops each exact flow at its stop rules: interpolating runs end
    # early with a loss under a tenth of the tolerance, converged ones at stationarity.
    runs = pd.read_csv(tmp_path / "runs.csv")
    early = runs["t_stop"] < config.t1
    assert early.any()
    done = (runs["train_mse"] < 0.1 * config.interpolation_tol * config.noise**2 * (1 + 1e-9)) | (
        runs["stationarity"] <= config.stationarity_tol
    )
    assert done[early & (runs["status"] == 0)].all()
