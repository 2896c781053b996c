import os
import subprocess
import sys
import textwrap


# The host-platform device count must be set before JAX initialises, so the check runs
# in a fresh interpreter with four simulated CPU devices.
_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import gradflow as gf

    assert len(jax.devices()) == 4, jax.devices()
    s = jnp.linspace(-2.0, 2.0, 6)
    x = jnp.stack([s, jnp.ones(6)], 1)
    y = jnp.tanh(s + 1)
    keys = jax.random.split(jax.random.key(0), 10)
    nets = jax.vmap(
        lambda k: gf.random_net(k, width=2, dim=2, scale=1e-8, activation="tanh")
    )(keys)
    kwargs = dict(t1=50.0, reduction="sum", chunk_size=6, progress=False)
    sharded = gf.flow_ensemble(nets, x, y, **kwargs)
    single = gf.flow_ensemble(nets, x, y, devices=jax.devices()[:1], **kwargs)
    # Same steps, same decisions; values agree to the ulps by which XLA's batched
    # reductions differ between a batch of 2 seeds per device and of 8 on one.
    np.testing.assert_array_equal(sharded.status, single.status)
    np.testing.assert_array_equal(sharded.num_steps, single.num_steps)
    np.testing.assert_allclose(sharded.net.W, single.net.W, rtol=1e-12)
    np.testing.assert_allclose(sharded.loss, single.loss, rtol=1e-12)
    assert sharded.status.shape == (10,) and np.all(sharded.status == 0)

    # A second sharded ensemble of the same structure (other data values) reuses the
    # compiled program: XLA compiles nothing more.
    y_other = jax.block_until_ready(2.0 * y)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: compiles.append(event)
        if event == "/jax/core/compile/backend_compile_duration" else None
    )
    gf.flow_ensemble(nets, x, y_other, **kwargs)
    assert not compiles, compiles
    print("OK")
    """
)


def test_sharded_ensemble_equals_single_device():
    env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")
