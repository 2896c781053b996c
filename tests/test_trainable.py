"""Training only some parameters: `gradient_flow(..., trainable=("a",))` (and
`gradient_descent`) keep the frozen ones at their initial values exactly; with only the
outer layer trainable the flow is linear least squares in `a`, checked against its
closed form (a matrix exponential) and, from `a = 0`, its minimum-norm limit."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

import gradflow as gf


def _data(n=5):
    x = jnp.linspace(-1.0, 1.0, n)[:, None]
    return x, jnp.sin(3.0 * x[:, 0]) + 0.3


def _relu_net(m, a_zero=False, seed=0):
    net = gf.random_net(jax.random.key(seed), width=m, dim=1, scale=1.0, bias=True)
    a = jnp.zeros(m) if a_zero else net.a
    return gf.TwoLayerNet(a, net.W, net.b, "relu")


def _features(net, x):
    """Φ: the hidden layer's outputs, `(n, m)`."""
    return np.asarray(net.activation(net.preactivation(x)))


# --------------------------------------------------------------------------------------
# Frozen means unchanged, bit for bit.
# --------------------------------------------------------------------------------------


# Slow (a compile per case, ~6 s each); the outer-layer tests below are the fast
# siblings: they check frozen `W`, `b` bit for bit under a radius shared with `a`.
@pytest.mark.slow
@pytest.mark.parametrize(
    "trainable, coordinates",
    [
        (("a",), gf.ScaleFree()),
        (("a",), gf.ScaleFree(layerwise=False)),
        # `b` shares its layer's radius with the frozen `W`: its state drifts by rounding,
        # the parameters may not.
        (("a", "b"), gf.ScaleFree()),
        (("W", "b"), gf.Cartesian(atol=1e-12)),
    ],
)
def test_frozen_parameters_are_unchanged_bit_for_bit(trainable, coordinates):
    x, y = _data()
    net = gf.random_net(jax.random.key(1), width=3, dim=1, scale=0.5, activation="tanh", bias=True)
    ts = jnp.linspace(0.0, 5.0, 4)
    sol = gf.gradient_flow(
        net, x, y, t1=5.0, ts=ts, trainable=trainable, coordinates=coordinates,
        solver=dfx.Tsit5(),
    )  # fmt: skip
    assert sol.status == gf.Status.SUCCESS
    for name in ("a", "W", "b"):
        start, end, saved = (getattr(n, name) for n in (net, sol.net, sol.nets))
        if name in trainable:
            assert not np.array_equal(end, start), name
        else:
            np.testing.assert_array_equal(end, start)
            np.testing.assert_array_equal(saved, np.broadcast_to(start, saved.shape))
    info = dict(sol.info)
    assert info["trainable"] == ", ".join(trainable)
    # tanh would jump its linear escape; its closed form moves every layer.
    assert info["linear_escape_order"] == "0"


def test_gradient_descent_trains_only_the_named_parameters():
    # Weight decay (an optimizer's own term) would move a frozen parameter unless its
    # update is zeroed. On `a`, written out here: a ← a − η (Φᵀ(Φa − y)/n + λa).
    x, y = _data()
    net = _relu_net(4)
    eta, lam, steps = 0.05, 0.1, 20
    sol = gf.gradient_descent(
        net, x, y, learning_rate=eta, t1=eta * steps, trainable=("a",),
        optimizer=optax.chain(optax.add_decayed_weights(lam), optax.sgd(eta)),
    )  # fmt: skip
    np.testing.assert_array_equal(sol.net.W, net.W)
    np.testing.assert_array_equal(sol.net.b, net.b)
    phi, a = _features(net, x), np.asarray(net.a)
    for _ in range(steps):
        a = a - eta * (phi.T @ (phi @ a - np.asarray(y)) / len(y) + lam * a)
    np.testing.assert_allclose(sol.net.a, a, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------
# Only `a` trainable: linear least squares in a.
# --------------------------------------------------------------------------------------

# The two tests share one compiled program (`t1` and the values of `ts` are traced): one
# radius for all of θ, which `a = 0` needs, and which `a` shares with the frozen layer.
_OUTER_KWARGS = dict(
    trainable=("a",), solver=dfx.Tsit5(), coordinates=gf.ScaleFree(layerwise=False),
    max_steps=100_000,
)  # fmt: skip
_WIDTH = 12


def _assert_hidden_layer_unchanged(sol, net):
    for name in ("W", "b"):
        start = getattr(net, name)
        np.testing.assert_array_equal(getattr(sol.net, name), start)
        saved = getattr(sol.nets, name)
        np.testing.assert_array_equal(saved, np.broadcast_to(start, saved.shape))


def test_outer_layer_flow_matches_the_matrix_exponential():
    # L = ½ mean (Φa − y)², so ȧ = −ΦᵀΦ a/n + Φᵀy/n and, with a* any solution of the
    # normal equations, a(t) = a* + exp(−tΦᵀΦ/n)(a0 − a*): the part of a0 − a* in the
    # null space of Φ stays. ReLU under a frozen hidden layer is smooth in a, so the
    # smooth driver runs (exact_kinks False) although kinks="exact" is the default.
    x, y = _data()
    net = _relu_net(_WIDTH)
    ts = jnp.array([0.0, 0.3, 1.0, 3.0])
    rtol = 1e-10
    sol = gf.gradient_flow(net, x, y, t1=3.0, ts=ts, rtol=rtol, **_OUTER_KWARGS)
    assert sol.status == gf.Status.SUCCESS
    _assert_hidden_layer_unchanged(sol, net)
    assert dict(sol.info)["exact_kinks"] == "False"
    phi, a0, n = _features(net, x), np.asarray(net.a), len(y)
    a_star = np.linalg.pinv(phi) @ np.asarray(y)
    expected = np.stack(
        [a_star + scipy.linalg.expm(-t * phi.T @ phi / n) @ (a0 - a_star) for t in ts]
    )
    # Tolerance: the flow contracts (ΦᵀΦ ⪰ 0), so the global error is at most the sum of
    # the local ones, each at most rtol·rms(a) (ScaleFree's error per step); a factor 10
    # for the controller's estimate of the local error. The radius is that of all of θ.
    theta_rms = float(np.sqrt(np.mean(np.asarray(gf._misc.ravel_net(net)[0]) ** 2)))
    bound = 10 * int(sol.num_steps) * rtol * theta_rms
    error = float(np.max(np.abs(np.asarray(sol.nets.a) - expected)))
    assert error <= bound, (error, bound)
    assert error < 1e-7


def test_outer_layer_flow_from_zero_reaches_the_minimum_norm_solution():
    # From a = 0 the flow stays in the row space of Φ, so with m > n its limit is the
    # interpolating a of least norm, pinv(Φ) y. Converged once e^{−λ_min t1} ≤ 1e-13, λ_min
    # the least non-zero eigenvalue of ΦΦᵀ/n.
    x, y = _data()
    net = _relu_net(_WIDTH, a_zero=True)
    phi, n = _features(net, x), len(y)
    lam_min = float(np.linalg.eigvalsh(phi @ phi.T / n)[0])
    assert lam_min > 1e-3
    t1 = 30.0 / lam_min
    sol = gf.gradient_flow(net, x, y, t1=t1, ts=jnp.linspace(0.0, t1, 4), **_OUTER_KWARGS)
    assert sol.status == gf.Status.SUCCESS
    np.testing.assert_allclose(sol.net.a, np.linalg.pinv(phi) @ np.asarray(y), rtol=0, atol=1e-8)
    _assert_hidden_layer_unchanged(sol, net)


# --------------------------------------------------------------------------------------
# Errors.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trainable, match",
    [
        (("c",), "among"),
        (("a", "a"), "twice"),
        ((), "empty"),
    ],
)
def test_bad_trainable_names_are_refused(trainable, match):
    x, y = _data()
    with pytest.raises(ValueError, match=match):
        gf.gradient_flow(_relu_net(3), x, y, t1=1.0, trainable=trainable, kinks="smooth")


def test_bias_of_a_net_without_bias_is_refused():
    x, y = _data()
    net = gf.random_net(jax.random.key(0), width=3, dim=1, scale=1.0, activation="tanh")
    with pytest.raises(ValueError, match="no bias"):
        gf.gradient_flow(net, x, y, t1=1.0, trainable=("a", "b"))
    with pytest.raises(ValueError, match="no bias"):
        gf.gradient_descent(net, x, y, learning_rate=0.1, t1=1.0, trainable=("b",))


def test_exact_kinked_flow_refuses_a_moving_hidden_layer_with_a_frozen_part():
    x, y = _data()
    with pytest.raises(ValueError, match="kinks='smooth'"):
        gf.gradient_flow(_relu_net(3), x, y, t1=1.0, trainable=("a", "W"))


def test_all_zero_outer_layer_points_to_the_coordinates_that_work():
    x, y = _data()
    with pytest.raises(ValueError, match=r"layerwise=False.*Cartesian"):
        gf.gradient_flow(_relu_net(3, a_zero=True), x, y, t1=1.0, trainable=("a",))
