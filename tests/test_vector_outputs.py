"""Networks with vector outputs, $f_\\theta(x) = \\sum_j a_j\\,\\sigma(w_j \\cdot x + b_j) \\in
\\mathbb{R}^k$ with `a` of shape `(m, k)`: the shape contract, the scalar case unchanged, every
driver and batching layer, and the flow against independent answers (hand-written NumPy
gradients, SciPy's DOP853, and the closed-form staircase of two-layer linear networks)."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import as_jax, assert_relative_close, NUMPY_ACTIVATIONS
from scipy.integrate import solve_ivp

import gradflow as gf


K = 3  # outputs


def _data(n=6, k=K):
    """Inputs (s, 1) on [-2, 2] and k smooth targets of s."""
    s = np.linspace(-2.0, 2.0, n)
    x = np.stack([s, np.ones(n)], axis=1)
    y = np.stack([np.tanh(s + 1.0), np.tanh(1.0 - s), 0.5 * s][:k], axis=1)
    return as_jax(x), as_jax(y)


def _flat(net):
    """θ = (a, W, b) of one net (or of each net along leading axes), flattened."""
    batch = net.W.shape[:-2]
    leaves = [net.a, net.W] + ([] if net.b is None else [net.b])
    return np.concatenate([np.asarray(v).reshape(batch + (-1,)) for v in leaves], axis=-1)


# --------------------------------------------------------------------------------------
# Model, loss, initialisations.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("name", ["relu", "tanh", "identity"])
def test_forward_loss_and_imbalance_match_numpy(name, bias):
    rng = np.random.default_rng(0)
    m, d, n = 4, 3, 7
    a, W = rng.normal(size=(m, K)), rng.normal(size=(m, d))
    b = rng.normal(size=m) if bias else None
    x, y, omega = rng.normal(size=(n, d)), rng.normal(size=(n, K)), rng.uniform(size=n)
    net = gf.TwoLayerNet(as_jax(a), as_jax(W), None if b is None else as_jax(b), name)
    assert (net.width, net.dim, net.output_shape) == (m, d, (K,))
    sigma, _ = NUMPY_ACTIVATIONS[name]
    hidden = sigma(x @ W.T + (0 if b is None else b))
    out = net(as_jax(x))
    assert out.shape == (n, K) and out.dtype == jnp.float64
    # Length-m dot products of O(1) terms: rounding of a few ulps of Σ|a_jk σ_j|.
    assert np.all(np.abs(np.asarray(out) - hidden @ a) <= 1e-14 * (np.abs(hidden) @ np.abs(a)))
    residual = hidden @ a - y
    for reduction, norm in (("mean", np.sum(omega)), ("sum", 1.0)):
        expected = 0.5 * np.sum(omega[:, None] * residual**2) / norm
        loss = gf.squared_loss(net, as_jax(x), as_jax(y), as_jax(omega), reduction)
        np.testing.assert_allclose(float(loss), expected, rtol=1e-13)
    unweighted = gf.squared_loss(net, as_jax(x), as_jax(y))
    np.testing.assert_allclose(float(unweighted), 0.5 * np.sum(residual**2) / n, rtol=1e-13)
    imbalance = np.sum(a**2, axis=1) - np.sum(W**2, axis=1) - (0 if b is None else b**2)
    np.testing.assert_allclose(np.asarray(gf.imbalance(net)), imbalance, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(
        float(gf.parameter_norm(net)), np.linalg.norm(_flat(net)), rtol=1e-15
    )


def test_column_net_is_the_scalar_net(getkey):
    """`a` of shape (m,) with targets (n,) and `a` of shape (m, 1) with targets (n, 1) are
    the same problem: equal outputs and loss, and gradients equal to rounding."""
    x, y = _data(k=1)
    net = gf.random_net(getkey(), width=3, dim=2, scale=0.7, activation="tanh", bias=True)
    column = gf.TwoLayerNet(net.a[:, None], net.W, net.b, net.activation)
    assert net.output_shape == () and column.output_shape == (1,)
    np.testing.assert_array_equal(column(x)[:, 0], net(x))
    np.testing.assert_allclose(
        float(gf.squared_loss(column, x, y)), float(gf.squared_loss(net, x, y[:, 0])), rtol=1e-15
    )
    grad_scalar = jax.grad(gf.squared_loss)(net, x, y[:, 0])
    grad_column = jax.grad(gf.squared_loss)(column, x, y)
    assert_relative_close(_flat(grad_column), _flat(grad_scalar), 1e-14)
    np.testing.assert_array_equal(gf.imbalance(column), gf.imbalance(net))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("distribution", ["gaussian", "sphere"])
def test_random_net_with_outputs(getkey, distribution, bias):
    key = getkey()
    net = gf.random_net(
        key, width=5, dim=3, scale=1e-3, bias=bias, distribution=distribution, outputs=K
    )
    assert net.a.shape == (5, K) and net.W.shape == (5, 3) and net.a.dtype == jnp.float64
    assert net.output_shape == (K,)
    if distribution == "sphere":
        # Balanced: ‖a_j‖ = ‖(w_j, b_j)‖ = ε, so C_j = 0 up to rounding of ε².
        np.testing.assert_allclose(np.linalg.norm(net.a, axis=1), 1e-3, rtol=1e-14)
        np.testing.assert_array_less(np.abs(gf.imbalance(net)), 1e-20)
    # The scalar draws do not change with the new option.
    scalar = gf.random_net(key, width=5, dim=3, scale=1e-3, bias=bias, distribution=distribution)
    reference = gf.random_net(
        key, width=5, dim=3, scale=1e-3, bias=bias, distribution=distribution, outputs=None
    )
    assert scalar.a.shape == (5,)
    np.testing.assert_array_equal(_flat(scalar), _flat(reference))
    np.testing.assert_array_equal(scalar.W, net.W)


@pytest.mark.parametrize("bias", [False, True])
def test_net_with_imbalance_with_outputs(getkey, bias):
    imbalance = jnp.array([2.0, -1.0, 0.0, 0.5]) * 1e-4
    net = gf.net_with_imbalance(getkey(), imbalance, dim=3, scale=1e-2, bias=bias, outputs=K)
    assert net.a.shape == (4, K)
    # C_j of size 1e-4 from squares of size 1e-4: a few ulps of 1e-4.
    np.testing.assert_allclose(np.asarray(gf.imbalance(net)), imbalance, rtol=0, atol=1e-18)


# --------------------------------------------------------------------------------------
# Structure errors, before anything is compiled.
# --------------------------------------------------------------------------------------


def _vector_problem(k=K):
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-3, activation="tanh", outputs=k)
    return (net,) + _data(k=k)


@pytest.mark.mistyped
@pytest.mark.parametrize(
    "y_shape, match",
    [
        ((6,), r"`y` must have shape \(n, k\) = \(6, 3\) to match `x` and the net's k = 3"),
        ((6, 2), r"`y` must have shape \(n, k\) = \(6, 3\)"),
        ((6, 3, 1), r"`y` must have shape \(n, k\) = \(6, 3\)"),
        ((5, 3), r"`y` must have shape \(n, k\) = \(6, 3\)"),
    ],
)
def test_targets_that_do_not_fit_the_outputs(y_shape, match):
    net, x, _ = _vector_problem()
    with pytest.raises(ValueError, match=match):
        gf.gradient_flow(net, x, jnp.ones(y_shape), t1=1.0)
    with pytest.raises(ValueError, match=match):
        gf.gradient_descent(net, x, jnp.ones(y_shape), learning_rate=0.1, t1=1.0)


def test_vector_targets_for_a_scalar_net():
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-3, activation="tanh")
    x, y = _data()
    with pytest.raises(ValueError, match=r"`y` must have shape \(n,\) = \(6,\).*outputs=k"):
        gf.gradient_flow(net, x, y, t1=1.0)


@pytest.mark.mistyped
def test_other_structure_errors(getkey):
    net, x, y = _vector_problem()
    with pytest.raises(ValueError, match=r"`weights` must have shape \(n,\) = \(6,\)"):
        gf.gradient_flow(net, x, y, weights=jnp.ones((6, K)), t1=1.0)
    with pytest.raises(ValueError, match=r"`y` must have the shape of the net's outputs"):
        gf.squared_loss(net, x, y[:, 0])
    with pytest.raises(ValueError, match=r"`a` must have shape \(m,\) .* or \(m, k\)"):
        gf.TwoLayerNet(jnp.ones((2, 3, 1)), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="`b` must have shape"):
        gf.TwoLayerNet(jnp.ones((2, 3)), jnp.ones((2, 2)), jnp.ones(3))
    for outputs in (0, 2.0, True):
        with pytest.raises(ValueError, match="`outputs` must be a positive integer"):
            gf.random_net(getkey(), width=2, dim=2, scale=1.0, outputs=outputs)
    nets = jax.vmap(lambda k: gf.random_net(k, width=2, dim=2, scale=1e-3, outputs=K))(
        jax.random.split(getkey(), 2)
    )
    with pytest.raises(ValueError, match=r"`y` must have shape \(n, k\) = \(6, 3\)"):
        gf.flow_ensemble(nets, x, y[:, :2], t1=1.0, progress=False)
    with pytest.raises(ValueError, match="`nets` must be a stacked `TwoLayerNet`"):
        gf.flow_ensemble(net, x, y, t1=1.0, progress=False)


def test_sweep_refuses_targets_of_changing_width():
    def data(n):
        x, y = _data(n)
        return x, y if n == 4 else y[:, :2]

    with pytest.raises(ValueError, match=r"every size needs the same"):
        gf.sweep(
            lambda k, s: gf.random_net(k, width=2, dim=2, scale=s, outputs=K),
            data, sizes=[4, 6], scales=[1e-3], num_seeds=1, t1=1.0, progress=False,
        )  # fmt: skip


# --------------------------------------------------------------------------------------
# The flow against independent answers. Tests that share a problem's shapes and options
# share its compiled program (Tsit5 where the solver is not the point: it compiles in a
# third of the default `TwoPhase`'s time).
# --------------------------------------------------------------------------------------


TANH_TS = np.linspace(0.0, 40.0, 9)
TANH_OPTIONS = dict(t1=40.0, ts=as_jax(TANH_TS), solver=dfx.Tsit5())


def _tanh_net(key, scale=1e-3, k=K):
    return gf.random_net(key, width=3, dim=2, scale=scale, activation="tanh", outputs=k)


def _numpy_gradient(theta, x, y, m, k):
    """∇L of L = ½·mean_i ‖tanh(x_i W^T) a − y_i‖², written out by hand."""
    n, d = x.shape
    a, W = theta[: m * k].reshape(m, k), theta[m * k :].reshape(m, d)
    hidden = np.tanh(x @ W.T)  # (n, m)
    error = (hidden @ a - y) / n  # (n, k)
    grad_a = hidden.T @ error
    grad_W = ((error @ a.T) * (1 - hidden**2)).T @ x
    return np.concatenate([grad_a.ravel(), grad_W.ravel()])


# Slow: test_staircase_matches_closed_form checks a vector-output flow against a closed form fast.
@pytest.mark.slow
def test_tanh_flow_matches_dop853():
    """Against SciPy's DOP853 on a hand-written gradient, from init scale 1e-8 through the
    escape (jumped in closed form along the singular modes of M, with three rates) and
    the fit. DOP853 at rtol 1e-12 and atol 1e-20 (1e-12 of the init scale) is exact to
    ~1e-11 relative; `gradient_flow` at rtol 1e-10 to ~1e-9 relative to ‖θ‖ (the accuracy
    contract of `gradient_flow`); the bound 1e-8 leaves a factor 10."""
    x, y = _data()
    net = _tanh_net(jax.random.key(0), scale=1e-8)
    sol = gf.gradient_flow(net, x, y, **TANH_OPTIONS)
    assert int(sol.status) == 0
    ref = solve_ivp(
        lambda t, th: -_numpy_gradient(th, np.asarray(x), np.asarray(y), 3, K),
        (0.0, 40.0), _flat(net), method="DOP853", t_eval=TANH_TS, rtol=1e-12, atol=1e-20,
    )  # fmt: skip
    assert ref.success
    # The run moved: the loss fell by more than half, through the escape and the fit.
    assert float(sol.loss[-1]) < 0.5 * float(sol.loss[0])
    assert_relative_close(_flat(sol.nets), ref.y.T, 1e-8)


@pytest.mark.slow  # two flow programs; `test_column_net_is_the_scalar_net` is fast
def test_column_flow_equals_scalar_flow():
    """A net with `a` of shape (m, 1) follows the flow of its scalar twin. The programs
    differ (the column net takes the vector branches, its escape's mode from an SVD), so
    they agree to the flow's accuracy, ~1e-9 of ‖θ‖ at rtol 1e-10; the bound 1e-8 leaves
    a factor 10."""
    x, y = _data(k=1)
    net = _tanh_net(jax.random.key(1), scale=1e-6, k=None)
    column = gf.TwoLayerNet(net.a[:, None], net.W, None, "tanh")
    scalar = gf.gradient_flow(net, x, y[:, 0], **TANH_OPTIONS)
    vector = gf.gradient_flow(column, x, y, **TANH_OPTIONS)
    assert int(scalar.status) == int(vector.status) == 0
    assert vector.nets.a.shape == (len(TANH_TS), 3, 1)
    assert_relative_close(_flat(vector.nets), _flat(scalar.nets), 1e-8)
    np.testing.assert_allclose(vector.loss, scalar.loss, rtol=1e-8)


def test_descent_matches_numpy(getkey):
    """Gradient descent steps are θ − η∇L with the hand-written gradient, and
    `distance_to_flow` is the relative distance of the stacked vector nets."""
    x, y = _data()
    net = _tanh_net(getkey(), scale=0.5)
    eta = 0.01
    ts = jnp.array([0.0, eta, 2 * eta])
    gd = gf.gradient_descent(net, x, y, learning_rate=eta, t1=2 * eta, ts=ts)
    theta = [_flat(net)]
    for _ in range(2):
        theta.append(
            theta[-1] - eta * _numpy_gradient(theta[-1], np.asarray(x), np.asarray(y), 3, K)
        )
    assert_relative_close(_flat(gd.nets), np.stack(theta), 1e-14)
    other = gf.gradient_descent(
        net, x, y, learning_rate=eta, t1=2 * eta, ts=ts, optimizer=optax.sgd(2 * eta)
    )
    expected = np.linalg.norm(_flat(other.nets) - _flat(gd.nets), axis=1) / np.linalg.norm(
        _flat(gd.nets), axis=1
    )
    np.testing.assert_allclose(gf.distance_to_flow(other, gd), expected, rtol=1e-12)


# The exact ReLU flow: a problem whose scalar flow crosses and pins (9 crossings, 7 pins).
RELU_TS = jnp.linspace(0.0, 20.0, 5)
RELU_OPTIONS = dict(t1=20.0, ts=RELU_TS, rtol=1e-10, observables={"C": gf.imbalance})


def _relu_problem(k):
    keys = jax.random.split(jax.random.key(2), 3)
    net = gf.random_net(keys[0], width=4, dim=3, scale=0.3, activation="relu")
    x = jax.random.normal(keys[1], (8, 3))
    y = jax.random.normal(keys[2], (8,))
    if k is None:
        return net, x, y
    # Further outputs: zero weights and targets at first, so the flow is the scalar one.
    pad = ((0, 0), (0, k - 1))
    return gf.TwoLayerNet(jnp.pad(net.a[:, None], pad), net.W), x, jnp.pad(y[:, None], pad)


@pytest.mark.slow  # two exact ReLU programs; `test_sliding_field_with_vector_outputs` is fast
def test_relu_with_silent_outputs_is_the_scalar_flow():
    """With a second output whose targets and outer weights are zero, that output stays zero
    (ȧ_j2 = −Σ_i e_i2 σ(z_ji) = 0) and the exact ReLU flow, crossings and pins included,
    is the scalar flow: each neuron feels a_j · e_i = a_j1 e_i1 through the vector
    branches of the sliding field. Agreement to the flow's accuracy as above."""
    scalar = gf.gradient_flow(*_relu_problem(None), **RELU_OPTIONS)
    vector = gf.gradient_flow(*_relu_problem(2), **RELU_OPTIONS)
    assert int(scalar.status) == int(vector.status) == 0
    np.testing.assert_array_equal(vector.nets.a[..., 1], 0.0)
    for name in ("num_crossings", "num_pins"):
        counts = [int(getattr(sol.observables["events"], name)) for sol in (scalar, vector)]
        assert counts[0] == counts[1] > 0, name
    assert_relative_close(vector.nets.W.reshape(5, -1), scalar.nets.W.reshape(5, -1), 1e-8)
    assert_relative_close(vector.nets.a[..., 0], scalar.nets.a, 1e-8)


@pytest.mark.slow  # an exact ReLU program; the field is checked fast by the sliding test
def test_relu_imbalance_is_conserved():
    """C_j = ‖a_j‖² − ‖w_j‖² is conserved by the exact ReLU flow with 2 outputs, through
    its crossings and pins. The solver's error of order rtol·‖θ‖ per step moves C_j by
    about 2‖θ‖ times that; over the run and the event projections it is measured at
    ~3 rtol·‖θ‖² (1e-8 at rtol 1e-10, ‖θ‖² ≈ 4); the bound is 100 rtol·‖θ‖²."""
    net, x, y = _relu_problem(2)
    # Both outputs active: a generic a_j ∈ R², targets correlated with the first output.
    net = gf.TwoLayerNet(net.a.at[:, 1].set(net.W[:, 0]), net.W)
    y = y.at[:, 1].set(jnp.tanh(x[:, 1]))
    sol = gf.gradient_flow(net, x, y, **RELU_OPTIONS)
    assert int(sol.status) == 0
    events = sol.observables["events"]
    assert int(events.num_crossings) > 0 and int(events.num_pins) > 0
    C = np.asarray(sol.observables["C"])
    theta_sq = np.max(np.sum(_flat(sol.nets) ** 2, axis=-1))
    assert np.max(np.abs(C - C[0])) <= 100 * RELU_OPTIONS["rtol"] * theta_sq
    assert float(sol.loss[-1]) < 0.5 * float(sol.loss[0])


# --------------------------------------------------------------------------------------
# Ensembles, sweeps, labelled datasets.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["refill", pytest.param("lockstep", marks=pytest.mark.slow)])
def test_ensemble_matches_gradient_flow_and_labels(schedule):
    """Each seed of a k = 3 ensemble is `gradient_flow` of its net (the refilling loop takes
    the same steps; lockstep vmaps them), to the ulps by which the batched programs sum in
    another order, amplified by the flow: the bound is 1e-9 of ‖θ‖."""
    x, y = _data()
    nets = jax.vmap(_tanh_net)(jax.random.split(jax.random.key(3), 3))
    ens = gf.flow_ensemble(
        nets, x, y, schedule=schedule, num_slots=2, progress=False, **TANH_OPTIONS
    )
    assert np.all(ens.status == 0) and ens.nets.a.shape == (3, len(TANH_TS), 3, K)
    for i in range(3):
        net = jax.tree_util.tree_map(lambda v: v[i], nets)
        alone = gf.gradient_flow(net, x, y, **TANH_OPTIONS)
        assert_relative_close(_flat(ens.nets)[i], _flat(alone.nets), 1e-9)
    ds = gf.to_dataset(ens)
    assert ds["a"].dims == ("seed", "neuron", "output") and ds["a"].shape == (3, 3, K)
    assert ds["W"].dims == ("seed", "neuron", "feature")
    np.testing.assert_array_equal(ds["a"].values, ens.net.a)


def test_pad_samples_with_vector_targets():
    # What the sweep adds to the ensemble's path for k outputs (its fast sibling): the
    # padded rows of y are zero on every output and carry zero weight.
    x, y = _data(4)
    xp, yp, wp = gf.pad_samples(6, x, y)
    assert xp.shape == (6, x.shape[1]) and yp.shape == (6, y.shape[1]) and wp.shape == (6,)
    np.testing.assert_array_equal(yp[:4], y)
    np.testing.assert_array_equal(yp[4:], 0.0)
    np.testing.assert_array_equal(wp, [1, 1, 1, 1, 0, 0])


@pytest.mark.slow  # a flow sweep; `test_pad_samples_with_vector_targets` is its fast sibling
def test_sweep_with_vector_targets():
    """A sweep over (n, ε, seed) with k = 3 targets: padded samples (zero weight, zero
    targets on every output) are ignored, so the n = 6 point is `gradient_flow` on the
    unpadded data, to 1e-9 of ‖θ‖ as above."""

    def data(n):
        return _data(n)

    ds = gf.sweep(
        lambda key, scale: _tanh_net(key, scale), data, sizes=[4, 6], scales=[1e-3],
        num_seeds=2, num_slots=2, progress=False, **TANH_OPTIONS,
    )  # fmt: skip
    assert ds["a"].dims == ("n", "scale", "seed", "neuron", "output")
    assert np.all(ds["status"].values == 0)
    key = gf.Grid([4, 6], [1e-3], 2).keys()[1]
    x, y = _data(6)
    alone = gf.gradient_flow(_tanh_net(key), x, y, **TANH_OPTIONS)
    end = ds.sel(n=6, scale=1e-3, seed=1)
    theta = np.concatenate([end["a"].values.ravel(), end["W"].values.ravel()])
    assert_relative_close(theta, _flat(alone.net), 1e-9)


# --------------------------------------------------------------------------------------
# The staircase of a two-layer linear network (Saxe, McClelland & Ganguli, 2014).
# --------------------------------------------------------------------------------------


STAIRCASE_S = np.array([4.0, 2.0, 1.0])  # the target's singular values s_1 > s_2 > s_3
STAIRCASE_TS = np.linspace(0.0, 12.0, 49)


def _staircase_problem():
    """Whitened inputs (Σ_i x_i x_iᵀ / n = I, n = 8, d = 4) and targets y_i = T x_i of the
    rank-3 map T = U diag(s) Vᵀ from R^4 to R^3, with random singular vectors."""
    rng = np.random.default_rng(0)
    n, d, k = 8, 4, 3
    x = np.sqrt(n) * np.linalg.qr(rng.normal(size=(n, d)))[0]
    U = np.linalg.qr(rng.normal(size=(k, k)))[0]
    V = np.linalg.qr(rng.normal(size=(d, k)))[0]
    y = x @ (U @ np.diag(STAIRCASE_S) @ V.T).T
    return as_jax(x), as_jax(y), U, V


def _staircase_flow(net, x, y, rtol=1e-10):
    sol = gf.gradient_flow(
        net, x, y, t1=12.0, ts=as_jax(STAIRCASE_TS), rtol=rtol, solver=dfx.Tsit5()
    )
    assert int(sol.status) == 0
    return sol


def _mode_strengths(sol, U, V):
    """$P_{rq}(t) = u_r^\\top M(t) v_q$ with the end-to-end map $M = a^\\top W$ (k × d)."""
    M = np.einsum("tjk,tjd->tkd", np.asarray(sol.nets.a), np.asarray(sol.nets.W))
    return np.einsum("kr,tkd,dq->trq", U, M, V)


def _logistic(s, u0, t):
    return s * np.exp(2 * s * t) / (np.exp(2 * s * t) - 1 + s / u0)


def test_staircase_matches_closed_form():
    """The closed form. With $\\tfrac1n \\sum_i x_i x_i^\\top = I$ the loss
    $\\tfrac12 \\tfrac1n \\sum_i \\|M x_i - T x_i\\|^2$ (`reduction="mean"`) is
    $\\tfrac12 \\|M - T\\|_F^2$, and the flow is $\\dot W = a (T - M)$,
    $\\dot a = W (T - M)^\\top$. Start neuron $r$ balanced on the $r$-th singular pair,
    $a_r = c\\,u_r$, $w_r = c\\,v_r$: then $M = \\sum_r c_r^2 u_r v_r^\\top$ stays diagonal in
    the singular bases, $\\dot c_r = c_r (s_r - c_r^2)$, and the mode strength
    $u_r^\\top M v_r = c_r^2$ solves $\\dot u = 2u(s - u)$:

    $$u_r(t) = \\frac{s_r e^{2 s_r t}}{e^{2 s_r t} - 1 + s_r / u_0}, \\qquad u_0 = c^2.$$

    (`reduction="sum"`, or inputs with $\\sum_i x_i x_i^\\top = I$, is the same with
    $\\tfrac1n$ dropped.) From $u_0 = 10^{-6}$ the modes are learnt one after another, at
    $t \\approx \\ln(s_r/u_0)/(2 s_r) = 1.9, 3.6, 6.9$.

    Tolerance: `gradient_flow`'s global error is ~10 rtol relative to ‖θ‖ (its accuracy
    contract), and $\\delta u_r \\lesssim \\|\\theta\\|\\,\\delta\\theta$ with
    $\\|\\theta\\|^2 = 2 \\sum_r u_r \\le 2 \\sum_r s_r = 14$: the bound is 140 rtol, absolute
    (1.4e-8 at rtol 1e-10; measured 1.6e-9). The off-diagonal strengths are zero exactly
    and stay at rounding (measured 2e-15). That the error is the solver's: at rtol 1e-8 it
    is more than 10 times larger (measured 62 times)."""
    x, y, U, V = _staircase_problem()
    c = 1e-3
    net = gf.TwoLayerNet(as_jax(c * U.T), as_jax(c * V.T), None, "identity")
    exact = _logistic(STAIRCASE_S, c**2, STAIRCASE_TS[:, None])
    errors = []
    for rtol in (1e-10, 1e-8):
        strengths = _mode_strengths(_staircase_flow(net, x, y, rtol), U, V)
        diagonal = np.diagonal(strengths, axis1=1, axis2=2)
        errors.append(np.max(np.abs(diagonal - exact)))
        off_diagonal = strengths - diagonal[:, :, None] * np.eye(3)
        assert np.max(np.abs(off_diagonal)) <= 1e-13
    assert errors[0] <= 140 * 1e-10
    assert errors[1] > 10 * errors[0]
    # The staircase: each mode's plateau holds while the next one is still near zero.
    for r, t in enumerate((2.75, 5.0)):
        at = np.searchsorted(STAIRCASE_TS, t)
        assert exact[at, r] > 0.99 * STAIRCASE_S[r] and exact[at, r + 1] < 0.1 * STAIRCASE_S[r + 1]


def _half_time(strength, s):
    """When a mode strength crosses s/2, interpolated in logit(u/s), which is linear in t
    for the logistic solution."""
    z = np.log(np.maximum(strength, 1e-300) / np.maximum(s - strength, 1e-300))
    i = int(np.argmax(z > 0))
    assert i > 0, "the mode never reached half its strength"
    t0, t1 = STAIRCASE_TS[i - 1], STAIRCASE_TS[i]
    return t0 - z[i - 1] * (t1 - t0) / (z[i] - z[i - 1])


def test_staircase_from_random_init():
    """From a small random balanced init (`distribution="sphere"`, ε = 1e-3) the modes do
    not start decoupled, and the closed form holds only approximately. Linearised at the
    origin, mode r grows like $e^{s_r t}$ along $g_j = (u_r \\cdot a_j + v_r \\cdot w_j)/2$
    in each neuron, so it starts from the effective strength $u_0 = \\sum_j g_j^2$ and
    would reach $s_r/2$ at $t_r = \\ln(s_r/u_0 - 1)/(2 s_r)$. The first mode is learnt
    before any other has grown, and its half-time matches to 1e-3 relative (measured 4e-6
    on this seed, 1e-4 at worst over 4 seeds); the later ones find the neurons already
    turned by the earlier modes: 10% for the second (measured 1-4%), and for the third,
    which has only what is left of m = 3 neurons, 30% (measured 7-20%). Whatever the
    timing, the plateaus come in order of decreasing $s_r$."""
    x, y, U, V = _staircase_problem()
    net = gf.random_net(
        jax.random.key(0), width=3, dim=4, scale=1e-3, activation="identity",
        distribution="sphere", outputs=3,
    )  # fmt: skip
    strengths = np.diagonal(_mode_strengths(_staircase_flow(net, x, y), U, V), axis1=1, axis2=2)
    g = (np.asarray(net.a) @ U + np.asarray(net.W) @ V) / 2
    predicted = np.log(STAIRCASE_S / np.sum(g**2, axis=0) - 1) / (2 * STAIRCASE_S)
    measured = np.array([_half_time(strengths[:, r], STAIRCASE_S[r]) for r in range(3)])
    assert np.all(np.diff(measured) > 0)
    assert np.all(np.abs(measured - predicted) <= np.array([1e-3, 0.1, 0.3]) * predicted)
    # Every mode is learnt by t1.
    np.testing.assert_allclose(strengths[-1], STAIRCASE_S, rtol=1e-3)


def test_sliding_field_with_vector_outputs():
    """The exact ReLU flow's field on a pattern with one pin, against the Filippov field
    written out in NumPy: with k outputs neuron j feels a_j · e_i, and the effective slope
    s of the pinned point keeps its pre-activation on the kink, x̃_i · ẇ_j = 0. Both sides
    are a few sums of O(1) terms: 1e-13 relative."""
    from gradflow._piecewise.pattern import breakplanes_of
    from gradflow._piecewise.sliding import PiecewiseField

    rng = np.random.default_rng(3)
    m, n, k = 2, 4, 2
    x = np.concatenate([rng.normal(size=(n, 2)), np.ones((n, 1))], axis=1)  # x̃ with a bias
    y, omega = rng.normal(size=(n, k)), rng.uniform(0.5, 1.0, size=n) / n
    a, W = rng.normal(size=(m, k)), rng.normal(size=(m, 3))
    W[0] -= (W[0] @ x[1]) / (x[1] @ x[1]) * x[1]  # neuron 0's breakplane through point 1
    z = W @ x.T
    pieces = np.where(z > 0, 2, 0)
    pieces[0, 1] = 1
    pins = np.full((m, 3), -1)
    pins[0, 0] = 1

    # NumPy: residual errors e_i ∈ R^k, neuron j's projection a_j · e_i, the slope that
    # makes ż_01 = 0, and the field with it.
    hidden = np.maximum(z, 0.0)
    hidden[0, 1] = 0.0
    error = omega[:, None] * (hidden.T @ a - y)
    felt = a @ error.T  # (m, n)
    slopes = (z > 0).astype(float)
    slopes[0, 1] = 0.0
    free_pull = (slopes * felt) @ x
    s = -(free_pull[0] @ x[1]) / (felt[0, 1] * (x[1] @ x[1]))
    slopes[0, 1] = s
    expected_a_dot = -(hidden @ error)
    expected_W_dot = -((slopes * felt) @ x)

    field = PiecewiseField(as_jax(x), as_jax(y), as_jax(omega), breakplanes_of(gf.ReLU()))
    (a_dot, W_dot), alpha, _ = field.evaluate(
        (as_jax(a), as_jax(W)), jnp.asarray(pieces, jnp.int32), jnp.asarray(pins, jnp.int32)
    )
    np.testing.assert_allclose(a_dot, expected_a_dot, rtol=1e-13)
    scale = np.max(np.abs(expected_W_dot))
    np.testing.assert_allclose(W_dot, expected_W_dot, rtol=0, atol=1e-13 * scale)
    assert abs(float(W_dot[0] @ as_jax(x[1]))) <= 1e-13 * scale  # it slides
    np.testing.assert_allclose(float(alpha[0, 0]), s, rtol=1e-12)  # ReLU: α = s
