"""The adaptive-regime experiment (issue 15): the cluster and pin measures on configurations
built by hand, the loss slice against the loss itself, pins read from the exact flow's
event log against pins read from its end state, and the quick reproduction (slow)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import pinning_net, pinning_problem

import gradflow as gf
from gradflow.experiments import adaptive_regime as ar


def _unit(angle):
    return np.array([np.cos(angle), np.sin(angle)])


# ---------------------------------------------------------------------------------------
# Breakplane distance and clusters.
# ---------------------------------------------------------------------------------------


def test_breakplane_distance_is_the_sup_over_the_data_ball():
    rng = np.random.default_rng(0)
    centre, radius = np.array([0.3, -0.2]), 1.7
    xi = np.stack([_unit(a) for a in rng.uniform(-np.pi, np.pi, 4)])
    gamma = rng.normal(size=4)
    D = ar.breakplane_distance(xi, gamma, centre, radius)
    # Independent: the largest difference of the signed distances on the ball's boundary
    # (the difference is affine, so its sup over the ball is on the boundary).
    boundary = centre + radius * np.stack([_unit(a) for a in np.linspace(0, 2 * np.pi, 20001)])
    signed = boundary @ xi.T - gamma
    brute = np.max(np.abs(signed[:, :, None] - signed[:, None, :]), axis=0) / radius
    np.testing.assert_allclose(D, brute, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(np.diag(D), 0.0)
    # Moving and scaling the data with the net leaves it unchanged.
    shift = np.array([5.0, -3.0])
    moved = ar.breakplane_distance(xi, 2 * (gamma + xi @ shift), 2 * (centre + shift), 2 * radius)
    np.testing.assert_allclose(moved, D, rtol=1e-12, atol=1e-12)


def test_clusters_on_hand_built_breakplanes():
    x = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    centre, radius = ar.data_ball(x)
    xi = np.stack([_unit(0.3), _unit(0.3 + 1e-4), _unit(0.3 - 1e-4), -_unit(0.3), _unit(2.0)])
    gamma = np.array([0.1, 0.1, 0.1 + 1e-4, -0.1, 0.5])
    labels = ar.clusters(xi, gamma, centre, radius, 1e-2)
    # Three near-copies; the same plane with the other side active is another response
    # function (distance 2 + ...); the last is far.
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 2])
    assert ar.cluster_counts(labels) == dict(clusters=1, largest=3, clustered=3, neurons=5)
    assert ar.cluster_counts(ar.clusters(xi, gamma, centre, radius, 1e-5))["clusters"] == 0
    # Excluded neurons get -1; a zero orientation (w = 0) has no breakplane.
    include = np.array([True, False, True, True, True])
    np.testing.assert_array_equal(
        ar.clusters(xi, gamma, centre, radius, 1e-2, include), [0, -1, 0, 1, 2]
    )
    xi_dead = xi.copy()
    xi_dead[4] = 0.0
    assert ar.clusters(xi_dead, gamma, centre, radius, 1e-2)[4] == -1
    # Single linkage: a chain of neighbours is one cluster whatever the order.
    chain = np.stack([_unit(0.0), _unit(0.008), _unit(0.016)])
    lab = ar.clusters(chain[::-1], np.zeros(3), np.zeros(2), 1.0, 1e-2)
    np.testing.assert_array_equal(lab, [0, 0, 0])
    assert ar.breakplane_distance(chain, np.zeros(3), np.zeros(2), 1.0)[0, 2] > 1e-2


def test_formation_times_and_alignment():
    ts = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    labels = np.array(
        [
            [0, 1, 2, 3],
            [0, 0, 1, 2],  # 0 and 1 together from t = 1 on
            [0, 0, 1, 1],
            [0, 0, 1, 2],  # 2 and 3 apart again
            [0, 0, 1, 1],  # ... and together at the end
        ]
    )
    assert ar.formation_times(labels, ts) == {0: 1.0, 1: 4.0}
    units = np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 1.0, 1.0], [0.0, -1.0, -1.0]])
    align = ar.response_alignment(units, np.array([0, 0, 1, 1]))
    assert align[0] == pytest.approx(1.0) and align[1] == pytest.approx(-1.0)


def test_alignment_leaves_out_neurons_that_never_grew():
    # 1-D, data on [-1, 1]. Neurons 0, 1: grown, one kink at 0.2 facing right, the same
    # sign of a — one response function, cosine 1. Neurons 2, 3: tiny, a kink at the
    # leftmost point facing left: zero on every probe, a cluster of their own.
    x = np.array([[-1.0], [-0.4], [0.1], [0.5], [1.0]])
    a = np.array([1.0, 0.5, 1e-9, -1e-9])
    W = np.array([[2.0], [1.0], [-1e-9], [-2e-9]])
    b = -0.2 * W[:, 0]
    b[2:] = -1.0 * np.abs(W[2:, 0])  # w x + b = 0 at x = -1, active for x < -1
    labels = ar.clusters(np.sign(W), -b / np.abs(W[:, 0]), *ar.data_ball(x), 1e-2)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    units = ar.unit_responses(a, W, b, "relu", ar.probe_points(x))
    assert np.all(units[2:] == 0)
    assert list(ar.response_alignment(units, labels).values()) == pytest.approx([1.0, 0.0])
    mean, lowest = ar.grown_alignment(a, W, b, "relu", x, 1e-2, 1e-3)
    assert mean == pytest.approx(1.0) and lowest == pytest.approx(1.0)
    # Opposite signs of a in one grown cluster cancel: cosine -1.
    assert ar.grown_alignment(a * [1, -1, 1, 1], W, b, "relu", x, 1e-2, 1e-3)[1] == (
        pytest.approx(-1.0)
    )
    # No cluster of two grown neurons: nothing to measure.
    assert np.isnan(ar.grown_alignment(a * [1, 1e-9, 1, 1], W, b, "relu", x, 1e-2, 1e-3)[0])


# ---------------------------------------------------------------------------------------
# Pins.
# ---------------------------------------------------------------------------------------


def _log(rows):
    """An event log with the fields of `gradflow.EventLog`; rows (neuron, point, kind,
    time_in, time_out)."""
    rows = np.array(rows, np.float64)
    return types.SimpleNamespace(
        neuron=rows[:, 0].astype(int), point=rows[:, 1].astype(int), kind=rows[:, 2].astype(int),
        time_in=rows[:, 3], time_out=rows[:, 4],
    )  # fmt: skip


def test_pins_from_a_hand_built_event_log():
    nan = np.nan
    log = _log(
        [
            [0, 2, 0, 0.5, 0.5],  # a crossing
            [1, 0, 1, 1.0, 3.0],  # pinned on [1, 3)
            [1, 2, 1, 2.0, nan],  # a second point of neuron 1, held to the end
            [2, 1, 1, 2.5, nan],
            [-1, -1, -1, nan, nan],  # an unused record
        ]
    )
    assert ar.pins_at(log, 0.9) == set()
    assert ar.pins_at(log, 2.2) == {(1, 0), (1, 2)}
    assert ar.pins_at(log, 10.0) == {(1, 2), (2, 1)}
    over = ar.pins_over_time(log, np.array([0.0, 1.0, 2.2, 2.7, 5.0]), m=3)
    np.testing.assert_array_equal(over["held"], [0, 1, 2, 3, 2])
    np.testing.assert_array_equal(over["pinned_neurons"], [0, 1, 1, 2, 2])
    np.testing.assert_array_equal(over["max_points"], [0, 1, 2, 2, 1])
    np.testing.assert_array_equal(over["gained"], [0, 1, 2, 3, 3])
    np.testing.assert_array_equal(over["released"], [0, 0, 0, 0, 1])
    np.testing.assert_allclose(ar.pin_durations(log, 6.0), [2.0, 4.0, 3.5])
    assert [p["neuron"] for p in ar.pin_table(log)] == [1, 1, 2]


def test_pins_from_a_hand_built_state():
    x = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    W = np.array(
        [
            [1.0, 2.0],  # through point 1 (b = -1), active at point 2
            [1.0, 2.0],  # 1e-6 off point 1: not on it
            [1.0, -2.0],  # through point 1, every other point inactive: dead
            [2.0, 0.0],  # through point 0 (b = 2)
        ]
    )
    b = np.array([-1.0, -1.0 + 1e-6, -1.0, 2.0])
    assert ar.pins_from_state(W, b, x, "relu") == {(0, 1), (3, 0)}
    # Leaky ReLU: no neuron is dead, the third is on point 1.
    assert ar.pins_from_state(W, b, x, "leaky_relu") == {(0, 1), (2, 1), (3, 0)}
    norm = np.sqrt(5.0)
    np.testing.assert_allclose(
        ar.point_distances(W / norm, -b / norm, x)[0], [2 / norm, 0.0, 1 / norm], atol=1e-15
    )


def test_crease_kinds():
    assert ar.crease_kind(-1.0, 2.0) == "valley"
    assert ar.crease_kind(1.0, -2.0) == "ridge"
    assert ar.crease_kind(1.0, 2.0) == "crease"
    assert ar.crease_kind(-1.0, -0.5) == "crease"


def test_slice_is_the_loss_difference_and_its_one_sided_slopes():
    x = np.array([[-1.0, -0.5], [1.0, -0.5], [0.0, 1.0]])
    y = np.array([1.0, -0.5, 0.75])
    rng = np.random.default_rng(3)
    a, W = rng.normal(size=3), rng.normal(size=(3, 2))
    # Neuron 0's breakplane through point 2.
    b = rng.normal(size=3)
    b[0] = -W[0] @ x[2]
    net = gf.TwoLayerNet(a, W, b, "relu")
    loss0 = float(gf.squared_loss(net, jnp.asarray(x), jnp.asarray(y)))
    phis = np.array([0.3, 1.1])
    us = np.array([-0.05, 0.07])
    delta, slope = ar.slice_loss(a, W, b, "relu", x, y, 0, 2, phis, us)
    s = np.linalg.norm(W[0])
    xt = np.r_[x[2], 1.0]
    normal = np.linalg.norm(np.r_[W[0], b[0]]) * xt / np.linalg.norm(xt)
    for phi, u, d in zip(phis, us, delta):
        wt = s * np.r_[np.cos(phi), np.sin(phi), -(np.cos(phi) * x[2, 0] + np.sin(phi) * x[2, 1])]
        wt = wt + u * normal
        moved = gf.TwoLayerNet(a, np.r_[[wt[:2]], W[1:]], np.r_[wt[2], b[1:]], "relu")
        loss = float(gf.squared_loss(moved, jnp.asarray(x), jnp.asarray(y)))
        assert d == pytest.approx(loss - loss0, rel=1e-9)
    # One-sided slopes along u at the pinned point's surface (u = 0) by finite differences.
    floor, slope = ar.slice_loss(a, W, b, "relu", x, y, 0, 2, phis, np.zeros(2))
    below, u_j = slope(2, -1)
    above, _ = slope(2, +1)
    np.testing.assert_allclose(u_j, 0.0, atol=1e-15)
    h = 1e-6
    up, _ = ar.slice_loss(a, W, b, "relu", x, y, 0, 2, phis, np.full(2, h))
    down, _ = ar.slice_loss(a, W, b, "relu", x, y, 0, 2, phis, np.full(2, -h))
    np.testing.assert_allclose(above, (up - floor) / h, rtol=1e-4)
    np.testing.assert_allclose(below, (floor - down) / h, rtol=1e-4)
    assert np.all(np.abs(above - below) > 1e-3)  # a kink indeed


def test_config_rejects_bad_input():
    with pytest.raises(ValueError, match="`width`"):
        ar.AdaptiveRegimeConfig(width=0)
    with pytest.raises(ValueError, match="`cluster_tol`"):
        ar.AdaptiveRegimeConfig(cluster_tol=0.05)
    with pytest.raises(ValueError, match="`points_2d`"):
        ar.AdaptiveRegimeConfig(points_2d=((0.0, 1.0, 2.0), (1.0, 0.0, 0.0)))
    with pytest.raises(ValueError, match="targets"):
        ar.AdaptiveRegimeConfig(targets_1d=(1.0, 2.0))
    with pytest.raises(ValueError, match="Unknown `activation`"):
        ar.AdaptiveRegimeConfig(sweep_activations=("relu", "swish"))
    with pytest.raises(ValueError, match="`scale`"):
        ar.AdaptiveRegimeConfig(scale=-1e-6)
    with pytest.raises(ValueError, match="`dim`"):
        ar.example(ar.quick_config(), dim=3)
    with pytest.raises(ValueError, match="two distinct points"):
        ar.data_ball(np.ones((3, 2)))


# ---------------------------------------------------------------------------------------
# The exact flow: pins from the event log against the end state.
# ---------------------------------------------------------------------------------------


def test_event_log_pins_equal_the_end_state_pins():
    # The pinning problem of tests/test_kinks.py (a biased ReLU net, 16 neurons, 40 points
    # in 3-D), called the same way, so that the suite's shared compilation cache compiles
    # its exact flow once for both tests.
    x, y, key_net = pinning_problem()
    net = pinning_net(jax.random.split(key_net, 2)[0])
    sol = gf.gradient_flow(net, x, y, t1=20.0)
    assert sol.status == gf.Status.SUCCESS
    log = sol.observables["events"]
    assert int(log.num_events) <= len(np.asarray(log.kind))  # every event is in the log
    held = ar.pins_at(log, float(sol.t_stop))
    assert len(held) == int(sol.observables["num_pinned"][-1]) > 0  # the check is not empty
    W, b, x = np.asarray(sol.net.W), np.asarray(sol.net.b), np.asarray(x)
    assert held == ar.pins_from_state(W, b, x, "relu")
    for k, i in held:
        # On the kink to rounding: |z| within a few ulps of the terms it sums.
        assert abs(W[k] @ x[i] + b[k]) <= 1e-13 * (np.abs(W[k]) @ np.abs(x[i]) + abs(b[k]))
    # At most d = 3 affinely independent points on one breakplane in 3-D.
    neurons = [k for k, _ in held]
    assert max(neurons.count(k) for k in neurons) <= 3
    over = ar.pins_over_time(log, np.asarray(sol.ts), m=16)
    np.testing.assert_array_equal(over["held"], np.asarray(sol.observables["num_pinned"]))


# The 2-D example end to end (slow: its own exact-flow program; the notebook reads the
# committed full run instead).
@pytest.fixture(scope="module")
def example_2d():
    return ar.example(ar.quick_config(), dim=2)


@pytest.mark.slow
def test_example_pins_and_series(example_2d):
    ds, sol = example_2d
    config = ar.quick_config()
    x, _ = config.data_2d()
    assert np.all(ds["status"].values == 0)
    assert ds["pins_end"].values.sum() > 0
    for s in range(ds.sizes["seed"]):
        log = types.SimpleNamespace(
            **{f: np.asarray(getattr(sol.observables["events"], f))[s]
               for f in ("neuron", "point", "kind", "time_in", "time_out")}
        )  # fmt: skip
        held = ar.pins_at(log, float(ds["t_stop"].values[s]))
        W, b = ds["W_end"].values[s], ds["b_end"].values[s]
        assert held == ar.pins_from_state(W, b, x, "relu", config.pin_tol)
        neurons = [k for k, _ in held]
        assert all(neurons.count(k) <= 2 for k in neurons)
    np.testing.assert_array_equal(ds["log_state_mismatch"].values, 0)
    np.testing.assert_array_equal(ds["pins_held"].values[:, -1], ds["pins_end"].values)
    gd = ar.gd_check(config, sol, *config.data_2d())
    # GD chatters across the pinned point within O(η R); the other points stay O(R) away.
    assert np.nanmax(gd["distance_over_rate_max"].values) < 5.0
    assert np.nanmin(gd["unpinned_median"].values) > 0.05


@pytest.mark.slow
def test_slices_about_a_pin_of_the_run(example_2d):
    ds, _ = example_2d
    sl = ar.loss_slices(ar.quick_config(), ds)
    # The configuration is pinned, so across its surface the loss has a valley: the
    # Filippov condition (both one-sided fields point into it).
    assert sl.attrs["kind_here"] == "valley"
    assert sl.attrs["slope_below_here"] < 0 < sl.attrs["slope_above_here"]
    kinds = sl["kind"].values[sl.attrs["pinned_point"]]
    assert kinds[np.argmin(np.abs(sl.angle.values - sl.attrs["angle"]))] == 0


@pytest.mark.slow
def test_quick_reproduction_writes_every_figure_beside_its_numbers(tmp_path):
    from gradflow._cli import main

    out = tmp_path / "ar"
    assert (
        main(["reproduce", "adaptive-regime", "--quick", "--out", str(out), "--no-progress"]) == 0
    )
    for name in ("example_2d", "line_1d", "gd_check", "loss_slice", "sweep"):
        assert (out / f"{name}.png").stat().st_size > 10_000
    for name in ("example_2d_seeds", "example_2d_time", "example_2d_events", "line_1d_seeds",
                 "gd_check", "loss_slice", "sweep", "sweep_summary"):  # fmt: skip
        assert (out / f"{name}.csv").exists()
    text = (out / "summary.txt").read_text()
    assert text.startswith("adaptive regime") and "adaptive-regime --quick" in text
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["example_2d"]["failed"] == 0
    assert summary["example_2d"]["log_state_mismatch_total"] == 0
    assert summary["loss_slice"]["kind_here"] == "valley"
