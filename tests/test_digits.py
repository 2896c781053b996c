"""The digits experiment's pieces (issue 15, item 6): the IDX reader on files the test
writes, the DCT filters and the line spectrum on hand-built cases with known answers,
the outer layer's closed-form flow against an independent reference, the split and the
preprocessing, and clear errors for bad configurations. The flow itself against the
closed form and the quick reproduction are slow."""

import dataclasses
import gzip

import jax
import numpy as np
import pytest
import scipy.linalg

from gradflow.experiments import digits


# ------------------------------------------------------------------------ IDX reader


def _images(count=5, side=4):
    return np.random.default_rng(0).integers(0, 256, (count, side, side), dtype=np.uint8)


def test_idx_roundtrip_and_mnist_directory(tmp_path):
    images, labels = _images(), np.array([3, 1, 4, 1, 5], np.uint8)
    digits.write_idx(tmp_path / "train-images-idx3-ubyte", images)
    digits.write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    # The header as LeCun's files have it: magic 0x00000803, then big-endian dims.
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:8] == (5).to_bytes(4, "big")
    np.testing.assert_array_equal(digits.read_idx(tmp_path / "train-images-idx3-ubyte"), images)
    # Gzipped test split, as distributed.
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress((tmp_path / "train-labels-idx1-ubyte").read_bytes())
    )
    for split in ("train", "test"):
        got_images, got_labels = digits.load_mnist(tmp_path, split)
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)
        assert got_images.dtype == np.uint8 and got_images.shape == (5, 4, 4)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda raw: b"\x01" + raw[1:], "not an IDX file"),
        (lambda raw: raw[:2] + b"\x0d" + raw[3:], r"type byte 0x0d \(float\)"),
        (lambda raw: raw[:-3], "truncated: the header's shape"),
        (lambda raw: raw + b"\x00", "trailing bytes"),
        (lambda raw: raw[:10], "truncated header"),
        (lambda raw: raw[:2], "shorter than the 4-byte"),
    ],
)
def test_idx_errors_name_the_file_and_the_fault(tmp_path, mutate, match):
    path = tmp_path / "bad-images-idx3-ubyte"
    digits.write_idx(path, _images())
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(digits.IDXError, match=match) as error:
        digits.read_idx(path)
    assert str(path) in str(error.value)


def test_idx_dimension_and_count_checks(tmp_path):
    digits.write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros(3, np.uint8))
    digits.write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(digits.IDXError, match="1 dimensions .* expected 3"):
        digits.load_mnist(tmp_path)
    digits.write_idx(tmp_path / "train-images-idx3-ubyte", _images(count=4))
    with pytest.raises(digits.IDXError, match="4 images but .* 3 labels"):
        digits.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        digits.load_mnist(tmp_path, "test")
    with pytest.raises(ValueError, match="dtype uint8"):
        digits.write_idx(tmp_path / "x", np.zeros(3))


# ------------------------------------------------------------------------ DCT filters


def test_dct_is_orthonormal_and_filters_split_an_image():
    c = digits.dct_matrix(8)
    np.testing.assert_allclose(c @ c.T, np.eye(8), atol=1e-14)
    images = np.random.default_rng(1).standard_normal((6, 8, 8))
    np.testing.assert_allclose(digits.idct2(digits.dct2(images)), images, atol=1e-13)
    for cutoff in (0, 3, 14):
        low = digits.dct_filter(images, cutoff, keep="low")
        high = digits.dct_filter(images, cutoff, keep="high")
        np.testing.assert_allclose(low + high, images, atol=1e-13)
        # Orthogonal projections: the parts are orthogonal.
        assert abs(np.sum(low * high)) < 1e-12
    # Parseval: band energies add up to the mean squared norm.
    energy = digits.band_energy(images)
    assert energy.shape == (15,)
    np.testing.assert_allclose(energy.sum(), np.mean(np.sum(images**2, (1, 2))), rtol=1e-13)
    # Everything in the top band (u + v = 14) is removed by a low-pass at 13.
    assert np.all(digits.dct_filter(images, 14, keep="high") == 0)


def test_a_pure_low_frequency_image_has_no_high_pass_energy():
    # One cosine across the rows: DCT coefficient (0, 1) only, band 1.
    coefficients = np.zeros((1, 8, 8))
    coefficients[0, 0, 1] = 2.0
    image = digits.idct2(coefficients)
    expected = 2.0 * digits.dct_matrix(8)[1] / np.sqrt(8)
    np.testing.assert_allclose(image[0], np.broadcast_to(expected, (8, 8)), atol=1e-15)
    flat = image.reshape(1, 64)  # flattened images filter alike
    # Rounding of two 8×8 transforms of entries ≤ 0.35: a few ulps, 1e-14 at most.
    for cutoff in range(1, 15):
        assert np.max(np.abs(digits.dct_filter(flat, cutoff, keep="high"))) < 1e-14
        np.testing.assert_allclose(digits.dct_filter(flat, cutoff), flat, atol=1e-14)
    # A cut-off below its band removes it all.
    assert np.max(np.abs(digits.dct_filter(flat, 0))) < 1e-14
    energy = digits.band_energy(image)
    np.testing.assert_allclose(energy, np.eye(15)[1] * 4.0, atol=1e-14)


def test_line_spectrum_of_a_sinusoid_and_of_a_constant():
    points, half = 256, 2.0
    s = -half + 2 * half * np.arange(points) / points
    k0 = 2 * np.pi * 10 / (2 * half)  # on the FFT grid: bin 10
    values = np.cos(k0 * s + np.array([0.0, 1.0, 2.0])[:, None])  # three lines
    k, power = digits.line_spectrum(values, s[1] - s[0])
    assert np.isclose(power.sum(), 1.0)
    # A periodic Hann window spreads a bin-centred sinusoid over bins 9, 10, 11 only,
    # in the ratio 1 : 4 : 1 of power.
    np.testing.assert_allclose(power[[9, 10, 11]], [1 / 6, 2 / 3, 1 / 6], rtol=1e-10)
    dk = k[1]
    assert digits.high_frequency_fraction(k, power, k0 + 1.5 * dk) < 1e-28
    assert digits.high_frequency_fraction(k, power, k0 - 1.5 * dk) == pytest.approx(1.0)
    # Several outputs: (lines, points, outputs) averages over both.
    k2, power2 = digits.line_spectrum(np.stack([values, values], -1), s[1] - s[0])
    np.testing.assert_allclose(power2, power, atol=1e-15)
    _, flat = digits.line_spectrum(np.ones((2, points)), s[1] - s[0])
    assert np.all(flat == 0)


def test_lines_and_accuracy():
    inputs = np.random.default_rng(2).standard_normal((10, 5))
    origins, directions = digits.random_lines(inputs, 4, 0)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    assert all(any(np.array_equal(o, x) for x in inputs) for o in origins)
    s, points = digits.line_points(origins, directions, 1.0, 8)
    np.testing.assert_allclose(points[:, 4], origins, atol=1e-15)  # s = 0 is sample 4
    assert digits.accuracy(np.eye(3)[[0, 2, 1]], [0, 2, 2]) == pytest.approx(2 / 3)


# ------------------------------------------------------------------------ data and kernel


def test_split_and_preprocessing():
    labels = np.repeat(np.arange(10), 5)
    train, test = digits.stratified_split(labels, 3, 0)
    assert np.all(np.bincount(labels[train]) == 3)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 50
    np.testing.assert_array_equal(train, digits.stratified_split(labels, 3, 0)[0])
    with pytest.raises(ValueError, match="`train_per_class` = 5 leaves no test image"):
        digits.stratified_split(labels, 5, 0)
    images = np.random.default_rng(3).uniform(0, 16, (20, 8, 8))
    prep = digits.Preprocessing(images)
    x = prep(images)
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-14)
    np.testing.assert_allclose(np.mean(np.sum(x**2, 1)), 1.0, rtol=1e-13)


def test_kernel_solution_matches_the_matrix_exponential():
    """$a(t)$ of $\\dot a = -A a + B$, $A = \\Phi^T\\Phi/n$, $B = \\Phi^T Y/n$, from the
    exponential of the augmented matrix $[[-A, B], [0, 0]]$ (SciPy's `expm`): an
    independent route. Long times: the minimum-norm interpolant $\\Phi^+ Y$."""
    rng = np.random.default_rng(4)
    n, m, k = 6, 9, 3
    phi, y = rng.standard_normal((n, m)), rng.standard_normal((n, k))
    a_matrix, b_matrix = phi.T @ phi / n, phi.T @ y / n
    augmented = np.zeros((m + k, m + k))
    augmented[:m, :m], augmented[:m, m:] = -a_matrix, b_matrix
    times = [0.0, 0.3, 2.0]
    a, loss = digits.kernel_solution(phi, y, times)
    for t, a_t, loss_t in zip(times, a, loss):
        reference = scipy.linalg.expm(augmented * t)[:m, m:]
        np.testing.assert_allclose(a_t, reference, atol=1e-12 * max(1, np.abs(reference).max()))
        np.testing.assert_allclose(
            loss_t, 0.5 * np.mean(np.sum((phi @ a_t - y) ** 2, 1)), rtol=1e-12
        )
    a_inf, loss_inf = digits.kernel_solution(phi, y, [1e8])
    np.testing.assert_allclose(a_inf[0], np.linalg.pinv(phi) @ y, rtol=1e-10, atol=1e-12)
    assert loss_inf[0] < 1e-25
    t = digits.kernel_time_to_loss(phi, y, 1e-3, 1e8)
    assert digits.kernel_solution(phi, y, [t])[1][0] == pytest.approx(1e-3, rel=1e-5)
    # Fewer neurons than points: the loss stays above the least-squares floor.
    assert np.isnan(digits.kernel_time_to_loss(phi[:, :4], y, 1e-3, 1e8))


def test_config_rejects_bad_input():
    with pytest.raises(ValueError, match="`activations`: unknown"):
        digits.DigitsConfig(activations=("relu", "swish"))
    with pytest.raises(ValueError, match="`kernel_width` = 100 must be at least"):
        digits.DigitsConfig(kernel_width=100)
    with pytest.raises(ValueError, match="`scale` = 3.0 must be one of"):
        digits.DigitsConfig(scale=3.0)
    with pytest.raises(ValueError, match="`num_seeds` must be at least 2"):
        digits.DigitsConfig(num_seeds=1)
    with pytest.raises(ValueError, match="`loss_tol` must be a positive"):
        digits.DigitsConfig(loss_tol=-1.0)
    with pytest.raises(ValueError, match="`train_per_class` must be a positive integer"):
        digits.DigitsConfig(train_per_class=0)
    with pytest.raises(ValueError, match="`kernel_scales` must list positive"):
        digits.DigitsConfig(kernel_scales=(0.0, 1.0))
    with pytest.raises(ValueError, match="`relu_method` must be 'descent'"):
        digits.DigitsConfig(relu_method="smooth")
    with pytest.raises(ValueError, match="`relu_max_steps` must be a positive integer"):
        digits.DigitsConfig(relu_max_steps=0)


def test_designed_activation_is_a_band_pass():
    import gradflow as gf
    import gradflow.radon as radon

    config = digits.quick_config()
    phi = digits.designed_activation(config)
    assert len(phi.frequencies) < 60  # cheap enough for a network
    assert gf.get_activation("digits_bandpass") is not None
    k = np.array([0.05, config.band_centre, 3 * config.band_centre])
    magnitude = np.asarray(radon.numerical_fourier_magnitude(phi, k, half_width=phi.half_period))
    target = digits.gaussian_band_target(k, config.band_centre, config.band_width) ** -0.5
    np.testing.assert_allclose(magnitude[1], target[1], rtol=1e-6)
    assert magnitude[0] < 1e-3 * magnitude[1] and magnitude[2] < 1e-12 * magnitude[1]


# ------------------------------------------------------------------------ slow


@pytest.mark.slow
def test_outer_layer_flow_is_the_closed_form():
    """`gradient_flow(trainable=("a",))` from a = 0 on a frozen tanh layer (10 outputs)
    against `kernel_solution` at the same times."""
    import jax.numpy as jnp

    import gradflow as gf

    rng = np.random.default_rng(5)
    n, m, d = 12, 16, 64
    x = rng.standard_normal((n, d)) / np.sqrt(d)
    y = digits.one_hot(np.arange(n) % 10)
    w, b = rng.standard_normal((m, d)), rng.standard_normal(m)
    net = gf.TwoLayerNet(jnp.zeros((m, 10)), jnp.asarray(w), jnp.asarray(b), "tanh")
    ts = jnp.asarray([0.0, 1.0, 5.0, 20.0])
    sol = gf.gradient_flow(net, jnp.asarray(x), jnp.asarray(y), t1=20.0, ts=ts,
                           trainable=("a",), coordinates=gf.ScaleFree(layerwise=False))  # fmt: skip
    phi = np.tanh(x @ w.T + b)
    a, _ = digits.kernel_solution(phi, y, np.asarray(ts))
    got = np.asarray(sol.nets.a)
    assert int(sol.status) == 0
    np.testing.assert_allclose(got[1:], a[1:], rtol=1e-7, atol=1e-8 * np.abs(a).max())
    np.testing.assert_array_equal(np.asarray(sol.net.W), w)


@pytest.mark.slow
def test_quick_reproduction_writes_every_figure_beside_its_numbers(tmp_path):
    from gradflow._cli import main

    out = tmp_path / "digits"
    check = tmp_path / "check"
    args = ["reproduce", "digits", "--quick", "--out", str(out), "--no-progress"]
    assert main(args + ["--checkpoint-dir", str(check)]) == 0
    for name in ("accuracy", "kernel_scales", "dct_filtered", "line_spectra"):
        assert (out / f"{name}.png").stat().st_size > 10_000
        assert (out / f"{name}.csv").exists()
    text = (out / "summary.txt").read_text()
    assert text.startswith("spectral bias on handwritten digits")
    assert "gradflow reproduce digits --quick" in text
    assert (check / "kernel.nc").exists() and (check / "adaptive_relu.nc").exists()
    # A rerun from the checkpoints recomputes nothing and gives the same numbers.
    before = (out / "accuracy.csv").read_text()
    assert main(args + ["--checkpoint-dir", str(check)]) == 0
    assert (out / "accuracy.csv").read_text() == before


@pytest.mark.slow  # ~40 s: exact flows in 64-D with 10 outputs compile slowly
def test_adaptive_relu_by_the_exact_flow_is_gradient_flow_and_gd_follows_it():
    # `relu_method="exact"`: each seed's ReLU net by the exact Filippov flow, stopped at
    # `loss_tol`: the train loss equals the loss of `gradient_flow(..., kinks="exact")` on the
    # same data and net (the wiring), and GD at η and η/2 ends O(η) from the flow where it
    # stopped (the distance roughly halves), so it is the flow GD approximates.
    import jax.numpy as jnp

    import gradflow as gf

    config = dataclasses.replace(
        digits.quick_config(), activations=("relu",), relu_method="exact"
    )
    ds = digits.adaptive_regime(config)
    assert str(ds["method"].values[0]) == "exact Filippov flow"
    images, labels = digits.images_and_labels(config)
    data = digits.seed_data(config, images, labels, 0)
    x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"])
    net = jax.tree_util.tree_map(lambda v: v[0], digits.adaptive_nets(config, "relu", x.shape[-1]))
    sol = gf.gradient_flow(
        net, x, y, t1=config.adaptive_t1, loss_tol=config.loss_tol, rtol=config.rtol,
        kinks="exact", max_steps=config.relu_max_steps,
    )  # fmt: skip
    assert sol.succeeded
    np.testing.assert_allclose(float(ds["train_loss"].values[0, 0]), float(sol.final_loss),
                               rtol=1e-12)  # fmt: skip
    t_stop = float(sol.t_stop)
    theta = np.concatenate([np.ravel(v) for v in (sol.net.a, sol.net.W, sol.net.b)])
    gaps = []
    for eta in (2e-3, 1e-3):
        gd = gf.gradient_descent(net, x, y, learning_rate=eta, t1=round(t_stop / eta) * eta)
        theta_gd = np.concatenate([np.ravel(v) for v in (gd.net.a, gd.net.W, gd.net.b)])
        gaps.append(np.linalg.norm(theta_gd - theta) / np.linalg.norm(theta))
    assert gaps[1] < 0.7 * gaps[0] and gaps[0] < 0.05, gaps
