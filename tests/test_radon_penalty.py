"""Network penalties: values against hand formulas, the rescaling symmetry, the 1-D total
variation of f′ (an independent finite-difference count), gradients under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
import gradflow.radon as radon


def _relu_net(getkey, m=6, d=1):
    return gf.TwoLayerNet(
        jax.random.normal(getkey(), (m,)),
        jax.random.normal(getkey(), (m, d)),
        jax.random.normal(getkey(), (m,)),
        "relu",
    )


def test_network_penalty_values(getkey):
    net = _relu_net(getkey, d=3)
    c2 = net.a**2 * jnp.sum(net.W**2, axis=1)
    np.testing.assert_allclose(radon.network_penalty(net), jnp.sum(c2), rtol=1e-14)
    tau = 1.5
    gamma = -net.b / jnp.linalg.norm(net.W, axis=1)
    weight = np.sqrt(2 * np.pi) * tau * np.exp(gamma**2 / (2 * tau**2))
    np.testing.assert_allclose(
        radon.network_penalty(net, radon.GaussianOffsets(tau)), jnp.sum(c2 * weight), rtol=1e-13
    )
    # Invariant under (a, w, b) → (a/α, αw, αb).
    alpha = jnp.linspace(0.1, 10.0, 6)
    scaled = gf.TwoLayerNet(net.a / alpha, net.W * alpha[:, None], net.b * alpha, "relu")
    np.testing.assert_allclose(radon.network_penalty(scaled), radon.network_penalty(net))


def test_radon_tv_norm_is_the_variation_of_the_slope_in_1d(getkey):
    net = _relu_net(getkey)
    # f′ is piecewise constant; Σ|jumps of f′| = Σ|a_i||w_i| when the breakpoints differ.
    breakpoints = np.sort(np.asarray(-net.b / net.W[:, 0]))
    edges = np.concatenate([[breakpoints[0] - 1], breakpoints, [breakpoints[-1] + 1]])
    mids = 0.5 * (edges[1:] + edges[:-1])
    h = 1e-6 * np.min(np.diff(edges))
    x = jnp.asarray(np.stack([mids - h, mids + h]).T.reshape(-1, 1))
    values = np.asarray(net(x)).reshape(-1, 2)
    slopes = (values[:, 1] - values[:, 0]) / (2 * h)
    variation = np.sum(np.abs(np.diff(slopes)))
    np.testing.assert_allclose(radon.radon_tv_norm(net), variation, rtol=1e-7)


def test_leaky_relu_tv_norm(getkey):
    net = _relu_net(getkey)
    leaky = gf.TwoLayerNet(net.a, net.W, net.b, gf.LeakyReLU(negative_slope=0.25))
    np.testing.assert_allclose(
        radon.radon_tv_norm(leaky), 0.75 * radon.radon_tv_norm(net), rtol=1e-14
    )


def test_gradients_under_jit(getkey):
    net = _relu_net(getkey, d=2)

    @jax.jit
    def loss(net):
        return radon.network_penalty(net, radon.GaussianOffsets()) + radon.radon_tv_norm(net)

    grads = jax.grad(loss)(net)
    eps = 1e-6
    bumped = gf.TwoLayerNet(net.a.at[0].add(eps), net.W, net.b, "relu")
    fd = (loss(bumped) - loss(net)) / eps
    np.testing.assert_allclose(grads.a[0], fd, rtol=1e-4)


@pytest.mark.mistyped
def test_bad_input(getkey):
    tanh_net = gf.TwoLayerNet(jnp.ones(2), jnp.ones((2, 1)), None, "tanh")
    with pytest.raises(ValueError, match="network_penalty"):
        radon.radon_tv_norm(tanh_net)
    with pytest.raises(TypeError, match="`offsets`"):
        radon.network_penalty(tanh_net, radon.RadonDensity())
