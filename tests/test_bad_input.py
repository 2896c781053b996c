"""Every structural mistake raises before anything is compiled, with a message that
names the argument (in backticks) to fix."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf


pytestmark = pytest.mark.mistyped  # every test here passes ill-typed input on purpose


def _problem(dtype=jnp.float64, scale=1e-3):
    net = gf.random_net(
        jax.random.key(0), width=2, dim=2, scale=scale, activation="tanh", dtype=dtype
    )
    s = jnp.linspace(-2.0, 2.0, 6, dtype=dtype)
    x = jnp.stack([s, jnp.ones_like(s)], axis=1)
    return net, x, jnp.tanh(s + 1)


def _flow(**overrides):
    net, x, y = _problem()
    kwargs = dict(net=net, x=x, y=y, t1=10.0) | overrides
    return gf.gradient_flow(kwargs.pop("net"), kwargs.pop("x"), kwargs.pop("y"), **kwargs)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(x=jnp.ones(6)), r"`x` must have shape \(n, d\)"),
        (dict(x=jnp.ones((6, 3))), r"`x` has 3 features .* `W` expects d = 2"),
        (dict(y=jnp.ones(5)), r"`y` must have shape \(n,\) = \(6,\)"),
        (dict(y=jnp.ones((6, 1))), r"`y` must have shape"),
        (dict(weights=jnp.ones(5)), r"`weights` must have shape"),
        (dict(weights=-jnp.ones(6)), r"`weights` must be non-negative"),
        (dict(weights=jnp.zeros(6)), r"`weights` must be non-negative with at least one"),
    ],
)
def test_shape_mismatch(overrides, match):
    with pytest.raises(ValueError, match=match):
        _flow(**overrides)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["x", "y", "weights"])
def test_nonfinite_data(name, bad):
    net, x, y = _problem()
    arrays = dict(x=x, y=y, weights=jnp.ones(6))
    arrays[name] = arrays[name].at[1].set(bad)
    with pytest.raises(ValueError, match=f"`{name}` contains NaN or inf"):
        gf.gradient_flow(net, arrays["x"], arrays["y"], weights=arrays["weights"], t1=10.0)


def test_nonfinite_net():
    net, x, y = _problem()
    bad = gf.TwoLayerNet(net.a.at[0].set(jnp.nan), net.W, activation="tanh")
    with pytest.raises(ValueError, match="`net` contains NaN or inf"):
        gf.gradient_flow(bad, x, y, t1=10.0)


@pytest.mark.parametrize("name", ["rtol", "loss_tol", "stationarity_tol"])
@pytest.mark.parametrize("value", [0.0, -1e-3, np.nan, np.inf])
def test_tolerances_must_be_positive(name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be a positive finite number"):
        _flow(**{name: value})


@pytest.mark.parametrize("t1", [0.0, -1.0, np.inf, np.nan])
def test_t1_must_be_positive_and_finite(t1):
    with pytest.raises(ValueError, match="`t1` must be positive and finite"):
        _flow(t1=t1)


def test_t1_is_required():
    with pytest.raises(ValueError, match="`t1` is required"):
        _flow(t1=None)


@pytest.mark.parametrize(
    "ts, match",
    [
        (jnp.array([0.0, 5.0, 11.0]), r"`ts` must lie in \[0, t1\]"),
        (jnp.array([-1.0, 5.0, 10.0]), r"`ts` must lie in \[0, t1\]"),
        (jnp.array([0.0, 5.0, 4.0]), "`ts` must be finite and non-decreasing"),
        (jnp.array([0.0, jnp.nan, 10.0]), "`ts` must be finite and non-decreasing"),
        (jnp.zeros((2, 2)), "`ts` must be a non-empty 1-D array"),
        (jnp.zeros(0), "`ts` must be a non-empty 1-D array"),
    ],
)
def test_bad_save_times(ts, match):
    with pytest.raises(ValueError, match=match):
        _flow(ts=ts)


def test_options():
    with pytest.raises(ValueError, match="`reduction`"):
        _flow(reduction="median")
    with pytest.raises(ValueError, match="`max_steps`"):
        _flow(max_steps=0)
    with pytest.raises(ValueError, match="`max_steps`"):
        _flow(max_steps=10.5)
    with pytest.raises(TypeError, match="`coordinates`"):
        _flow(coordinates=dfx.PIDController(rtol=1e-6, atol=1e-6))
    with pytest.raises(ValueError, match="`atol`"):
        gf.Cartesian(atol=-1.0)
    net, x, y = _problem()
    with pytest.raises(TypeError, match="`net`"):
        gf.gradient_flow((net.a, net.W), x, y, t1=10.0)


def test_unknown_activation_name():
    with pytest.raises(ValueError, match="`activation`"):
        gf.random_net(jax.random.key(0), width=2, dim=2, scale=1.0, activation="tanhh")
    with pytest.raises(ValueError, match="`activation`"):
        gf.TwoLayerNet(jnp.ones(2), jnp.ones((2, 2)), activation="ReLU")


def test_float32_cannot_resolve_a_tiny_init():
    # ε = 1e-20 is representable in float32, but a_k·σ(w_k·x) ~ ε² = 1e-40 is not.
    net, x, y = _problem(jnp.float32, scale=1e-20)
    assert net.dtype == jnp.float32
    with pytest.raises(ValueError, match="`net` is float32 with init scale 1.*e-20"):
        gf.gradient_flow(net, x, y, t1=10.0)


@pytest.mark.parametrize("which", ["x", "y", "weights", "net"])
def test_mixed_precision(which):
    net, x, y = _problem()
    weights = jnp.ones(6)
    if which == "net":
        net, _, _ = _problem(jnp.float32)
    elif which == "x":
        x = x.astype(jnp.float32)
    elif which == "y":
        y = y.astype(jnp.float32)
    else:
        weights = weights.astype(jnp.float32)
    with pytest.raises(TypeError, match=f"must share one floating dtype.*{which}: float32"):
        gf.gradient_flow(net, x, y, weights=weights, t1=10.0)


def test_integer_data():
    net, x, y = _problem()
    with pytest.raises(TypeError, match="must share one floating dtype.*x: int32"):
        gf.gradient_flow(net, jnp.ones((6, 2), jnp.int32), y, t1=10.0)


@pytest.mark.slow  # the other argument errors here are fast
def test_zero_layer_needs_single_radius(w1_data):
    x, y = w1_data
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-3, activation="tanh")
    zero_a = gf.TwoLayerNet(jnp.zeros(2), net.W, activation="tanh")
    with pytest.raises(ValueError, match="layerwise=False"):
        gf.gradient_flow(zero_a, x, y, t1=1.0)
    sol = gf.gradient_flow(zero_a, x, y, t1=1.0, coordinates=gf.ScaleFree(layerwise=False))
    assert int(sol.status) == gf.Status.SUCCESS


@pytest.mark.parametrize("dtmin", [0.0, -1e-12, float("nan")])
def test_bad_dtmin(w1_data, dtmin):
    x, y = w1_data
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-3, activation="tanh")
    with pytest.raises(ValueError, match="dtmin"):
        gf.gradient_flow(net, x, y, t1=1.0, dtmin=dtmin)
