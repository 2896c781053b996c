import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_relative_close, flatten

import gradflow as gf


def _data(n):
    s = np.linspace(-2.0, 2.0, n)
    return np.stack([s, np.ones(n)], axis=1), np.tanh(s + 1.0)


def _init(key, scale):
    return gf.random_net(key, width=2, dim=2, scale=scale, activation="tanh")


def test_sweep_compiles_once_and_matches_direct_runs():
    traces = []

    def init(key, scale):
        if isinstance(scale, jax.core.Tracer):
            traces.append(scale)  # one entry per trace of the compiled program
        return _init(key, scale)

    sizes, scales = [3, 5, 6], [1e-3, 1e-12]
    kwargs = dict(t1=25.0, ts=jnp.array([0.0, 25.0]), reduction="sum")
    ds = gf.sweep(
        init,
        _data,
        sizes=sizes,
        scales=scales,
        num_seeds=3,
        chunk_size=4,
        progress=False,
        **kwargs,
    )
    # 18 runs in 5 chunks over 3 data sizes and 2 scales: a single trace.
    assert len(traces) == 1
    assert ds["loss"].dims == ("n", "scale", "seed", "time")
    assert ds.sizes == {
        "n": 3, "scale": 2, "seed": 3, "time": 2, "phase": 2, "neuron": 2, "feature": 2
    }
    assert np.all(ds["status"].values == 0)

    # Padding with zero-weight samples is exact: a grid point equals the run on the
    # unpadded data (same seed key), up to reassociation in the padded sums (1e-10
    # relative to ‖θ‖, and to the initial loss).
    keys = jax.random.split(jax.random.key(0), 3)
    x, y = _data(5)
    direct = gf.gradient_flow(_init(keys[2], 1e-12), x, y, **kwargs)
    point = ds.sel(n=5, scale=1e-12, seed=2)
    theta = np.concatenate([point["a"].values, point["W"].values.ravel()])
    assert_relative_close(theta, flatten(direct.net), rtol=1e-10)
    loss = np.asarray(direct.loss)
    np.testing.assert_allclose(point["loss"].values, loss, rtol=1e-10, atol=1e-10 * loss[0])


def test_mean_reduction_ignores_padding():
    # ½·mean over the n real samples, not over the padded length.
    net = _init(jax.random.key(1), 0.5)
    x, y = (jnp.asarray(v) for v in _data(4))
    xp = jnp.concatenate([x, jnp.zeros((3, 2))])
    yp = jnp.concatenate([y, jnp.full(3, 7.0)])
    w = jnp.concatenate([jnp.ones(4), jnp.zeros(3)])
    np.testing.assert_allclose(
        gf.squared_loss(net, xp, yp, w, "mean"), gf.squared_loss(net, x, y), rtol=1e-15
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sizes=[], scales=[1e-3]), "sizes"),
        (dict(sizes=[0, 3], scales=[1e-3]), "sizes"),
        (dict(sizes=[3], scales=[-1e-3]), "scales"),
        (dict(sizes=[3], scales=[1e-3], num_seeds=0), "num_seeds"),
        (dict(sizes=[3], scales=[1e-3], weights=np.ones(3)), "weights"),
    ],
)
def test_bad_sweep_input(kwargs, match):
    kwargs = dict(num_seeds=2) | kwargs
    with pytest.raises(ValueError, match=match):
        gf.sweep(_init, _data, t1=1.0, progress=False, **kwargs)


def test_bad_data_function():
    with pytest.raises(ValueError, match=r"data\(3\)"):
        gf.sweep(_init, lambda n: _data(n + 1), sizes=[3], scales=[1e-3], num_seeds=1, t1=1.0)
