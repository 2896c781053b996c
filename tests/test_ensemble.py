import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_relative_close, flatten

import gradflow as gf
from gradflow._schedule import check_schedule


def _nets(key, num, scale=1e-6):
    keys = jax.random.split(key, num)
    return jax.vmap(lambda k: gf.random_net(k, width=2, dim=2, scale=scale, activation="tanh"))(
        keys
    )


def _seed(nets, i):
    return jax.tree_util.tree_map(lambda v: v[i], nets)


def test_ensemble_matches_single_runs(getkey, w1_data):
    # 5 seeds in chunks of 2: the last chunk is padded, and padding must not leak.
    x, y = w1_data
    nets = _nets(getkey(), 5)
    kwargs = dict(t1=30.0, ts=jnp.array([0.0, 10.0, 30.0]), reduction="sum")
    ens = gf.flow_ensemble(nets, x, y, chunk_size=2, progress=False, **kwargs)
    assert ens.status.shape == (5,) and ens.loss.shape == (5, 3)
    for i in (0, 4):
        single = gf.gradient_flow(_seed(nets, i), x, y, **kwargs)
        # vmap runs the same arithmetic per seed; 1e-12 (relative to ‖θ‖, and to the
        # initial loss) allows for XLA fusing the batched program differently
        # (reassociation at machine precision).
        assert_relative_close(flatten(_seed(ens.net, i)), flatten(single.net), rtol=1e-12)
        loss = np.asarray(single.loss)
        np.testing.assert_allclose(ens.loss[i], loss, rtol=1e-12, atol=1e-12 * loss[0])
        assert ens.num_steps[i] == single.num_steps


def test_failed_seed_does_not_stop_the_others(getkey, w1_data):
    # Per-seed data: seed 1's inputs are scaled up 300×, which makes its flow far
    # stiffer, so it exhausts a step budget that the others meet.
    x, y = w1_data
    nets = _nets(getkey(), 3)
    xs = jnp.stack([x, 300 * x, x])
    ys = jnp.stack([y, y, y])
    ens = gf.flow_ensemble(
        nets, xs, ys, t1=40.0, reduction="sum", max_steps=3000, chunk_size=3, progress=False
    )
    np.testing.assert_array_equal(ens.status, [0, gf.Status.MAX_STEPS_REACHED, 0])
    assert np.all(np.isfinite(ens.net.a[1]))
    assert ens.t_stop[1] < 40.0 and ens.t_stop[0] == 40.0
    assert "max_steps" in ens.message[1]


def test_checkpoint_resume_reuses_finished_chunks(getkey, w1_data, tmp_path):
    x, y = w1_data
    nets = _nets(getkey(), 4)
    kwargs = dict(t1=20.0, reduction="sum", chunk_size=2, progress=False)
    first = gf.flow_ensemble(nets, x, y, checkpoint_dir=tmp_path, **kwargs)
    chunks = sorted(tmp_path.glob("chunk_*.npz"))
    assert len(chunks) == 2
    # Mark a stored chunk: a rerun must return the stored value, not recompute it.
    with np.load(chunks[0]) as data:
        leaves = {k: data[k].copy() for k in data.files}
    t_stop_key = next(k for k, v in leaves.items() if v.shape == (2,) and v.dtype == np.float64)
    leaves[t_stop_key][:] = -1.0
    np.savez(chunks[0], **leaves)
    chunks[1].unlink()  # an unfinished chunk is recomputed
    second = gf.flow_ensemble(nets, x, y, checkpoint_dir=tmp_path, **kwargs)
    flat_first = jax.tree_util.tree_leaves(first)
    flat_second = jax.tree_util.tree_leaves(second)
    assert any(np.all(np.asarray(v)[:2] == -1.0) for v in flat_second)
    for a, b in zip(flat_first, flat_second):
        np.testing.assert_array_equal(np.asarray(a)[2:], np.asarray(b)[2:])
    with pytest.raises(ValueError, match="checkpoint_dir"):
        gf.flow_ensemble(nets, x, y, checkpoint_dir=tmp_path, **(kwargs | {"t1": 21.0}))


@pytest.mark.slow  # tests/test_results.py::test_solution_records_how_it_was_made builds a dataset
def test_to_dataset_labels(getkey, w1_data):
    x, y = w1_data
    nets = _nets(getkey(), 3)
    ens = gf.flow_ensemble(
        nets,
        x,
        y,
        t1=10.0,
        ts=jnp.array([0.0, 5.0, 10.0]),
        reduction="sum",
        observables={"C": gf.imbalance},
        progress=False,
    )
    ds = gf.to_dataset(ens)
    assert ds["loss"].dims == ("seed", "time")
    assert ds["C"].dims == ("seed", "time", "C_dim0")
    assert ds["W"].dims == ("seed", "neuron", "feature")
    np.testing.assert_array_equal(ds["time"], [0.0, 5.0, 10.0])
    np.testing.assert_array_equal(ds["loss"].values, ens.loss)


def test_bad_ensemble_input(getkey, w1_data):
    x, y = w1_data
    nets = _nets(getkey(), 3)
    with pytest.raises(ValueError, match="stacked"):
        gf.flow_ensemble(_seed(nets, 0), x, y, t1=1.0)
    with pytest.raises(ValueError, match="leading axis"):
        gf.flow_ensemble(nets, jnp.stack([x, x]), jnp.stack([y, y]), t1=1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        gf.flow_ensemble(nets, x, y, t1=1.0, chunk_size=0)
    with pytest.raises(ValueError, match="`x` contains NaN"):
        gf.flow_ensemble(nets, x.at[0, 0].set(jnp.nan), y, t1=1.0)
    tiny32 = jax.tree_util.tree_map(lambda v: v.astype(jnp.float32), _nets(getkey(), 2, 1e-20))
    with pytest.raises(ValueError, match="float32"):
        gf.flow_ensemble(tiny32, x.astype(jnp.float32), y.astype(jnp.float32), t1=1.0)


@pytest.mark.slow  # test_failed_seed_does_not_stop_the_others is its fast sibling
def test_nan_seed_fails_fast_under_vmap(getkey, w1_data):
    # A traced NaN cannot be refused up front; its steps are all rejected, and the
    # `dtmin` floor must end it in a handful of steps instead of the whole budget
    # (which would hold up every seed of the batch).
    x, y = w1_data
    net = _seed(_nets(getkey(), 1), 0)
    ys = jnp.stack([y, y.at[2].set(jnp.nan)])
    sol = jax.vmap(
        lambda target: gf.gradient_flow(net, x, target, t1=50.0, reduction="sum", max_steps=5000)
    )(ys)
    np.testing.assert_array_equal(sol.status, [gf.Status.SUCCESS, gf.Status.NONFINITE])
    assert int(sol.num_steps[1]) < 50


# Slow: tests/test_sweep.py::test_sweep_compiles_once_and_matches_direct_runs is fast.
@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["refill", "lockstep"])
def test_repeated_calls_compile_once(getkey, w1_data, schedule):
    # The chunk function is a module, not a closure over the data: a second ensemble
    # of the same structure (other nets, other data values) must not be traced again.
    # The observable runs once per trace (and never at run time), so it counts traces.
    x, y = w1_data
    traces = []

    def norm(net):
        traces.append(1)
        return gf.parameter_norm(net)

    kwargs = dict(t1=5.0, schedule=schedule, progress=False, observables={"norm": norm})
    gf.flow_ensemble(_nets(getkey(), 3), x, y, **kwargs)
    first = len(traces)
    assert first > 0
    gf.flow_ensemble(_nets(getkey(), 3), x, 2.0 * y, **kwargs)
    assert len(traces) == first


def test_chunks_is_the_old_name_of_lockstep():
    # Accepted for one release after the rename (gradflow 0.1 called it "chunks").
    assert check_schedule("chunks", 1) == "lockstep"
    assert check_schedule("lockstep", 1) == "lockstep"
    with pytest.raises(ValueError, match="num_slots"):
        check_schedule("refill", True)


def test_sequential_schedule_skips_padding(getkey):
    # Exact ReLU flows run one after another; the repeat of seed 0 that pads the last
    # chunk of 3 seeds in chunks of 2 is skipped, not run in full (it cost the
    # optimization-threshold sweep minutes), and the real seeds equal single runs.
    from gradflow._schedule import FlowChunk

    x = jax.random.normal(getkey(), (8, 2))
    y = jnp.abs(x[:, 0]) - 0.3
    keys = jax.random.split(getkey(), 3)
    nets = jax.vmap(lambda k: gf.random_net(k, width=3, dim=2, scale=1e-3, activation="relu"))(
        keys
    )
    kwargs = dict(t1=5.0)
    ens = gf.flow_ensemble(nets, x, y, chunk_size=2, progress=False, **kwargs)
    for i in range(3):
        single = gf.gradient_flow(_seed(nets, i), x, y, **kwargs)
        assert_relative_close(flatten(_seed(ens.net, i)), flatten(single.net), rtol=1e-12)
        assert ens.num_steps[i] == single.num_steps > 0
    chunk = FlowChunk(None, (x, y, None), kwargs, schedule="sequential", num_slots=1)
    two = jax.tree_util.tree_map(lambda v: v[:2], nets)
    out = chunk((two, None), jnp.array([True, False]))
    assert out.num_steps[0] == ens.num_steps[0] and out.num_steps[1] == 0
