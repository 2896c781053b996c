"""Configuration → engine calls → labelled datasets, for the digits experiment.

`kernel_regime` and `adaptive_regime` each return an `xarray.Dataset` with the test
accuracies and the frequency-resolved measures of `measures` for every activation and
seed; `reproduce` writes them beside the figures."""

import time

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf
import gradflow.radon as radon

from . import measures
from .config import DESIGNED, DigitsConfig
from .data import load_digits, load_mnist, one_hot, Preprocessing, stratified_split


# ------------------------------------------------------------------------ data


def designed_activation(config: DigitsConfig):
    """The band-pass activation of `config` (`gaussian_band_target`), registered as
    `"digits_bandpass"` so that nets can name it."""
    phi = radon.design_activation(
        config.band_target,
        dim=1,
        period=config.design_period,
        max_frequency=6 * config.band_centre,
        name=DESIGNED,
    )
    gf.register_activation(DESIGNED, lambda: phi)
    return phi


def activation_name(config: DigitsConfig, name: str) -> str:
    """The registered name of `name` (`"designed"` → `"digits_bandpass"`, registering it)."""
    if name == "designed":
        designed_activation(config)
        return DESIGNED
    return name


def images_and_labels(config: DigitsConfig):
    """`(images (N, L, L), labels (N,))`: the 8×8 digits, or MNIST's training split."""
    if config.mnist_path is None:
        return load_digits()
    images, labels = load_mnist(config.mnist_path, "train")
    return images.astype(np.float64), labels.astype(np.int64)


def seed_data(config: DigitsConfig, images, labels, seed: int) -> dict:
    """One seed's split (`data.stratified_split`, drawn with `(config.seed, seed)`) and its
    preprocessed inputs: `x`, `y` (one-hot), `train_labels`, `x_test` (at most
    `max_test`), `test_labels`, `centred_test` (the test images centred and scaled,
    unflattened: what the DCT filters act on)."""
    train, test = stratified_split(labels, config.train_per_class, [config.seed, seed])
    test = test[: config.max_test]
    prep = Preprocessing(images[train])
    return dict(
        x=prep(images[train]),
        y=one_hot(labels[train]),
        train_labels=np.asarray(labels[train]),
        x_test=prep(images[test]),
        test_labels=np.asarray(labels[test]),
        side=images.shape[-1],
    )


# ------------------------------------------------------------------------ measures


def frequency_measures(predict, data: dict, config: DigitsConfig, seed: int) -> dict:
    """The measures of `measures` for one trained predictor `predict: (N, d) → (N, 10)`:
    `test_accuracy`; `lowpass_accuracy`, `highpass_accuracy` `(band,)` on DCT-filtered
    test inputs (band $c$: low keeps $u+v \\le c$, high keeps $u+v > c$); `spectrum
    (k,)` along random lines through the test inputs, and `high_fraction (cutoff,)`."""
    x_test, labels = data["x_test"], data["test_labels"]
    num_bands = 2 * data["side"] - 1
    low = [measures.dct_filter(x_test, c, keep="low") for c in range(num_bands)]
    high = [measures.dct_filter(x_test, c, keep="high") for c in range(num_bands)]
    n = len(x_test)
    outputs = np.asarray(predict(np.concatenate([x_test] + low + high)))
    accuracy = measures.accuracy(outputs[:n], labels)
    low_acc = [
        measures.accuracy(outputs[n * (1 + c) : n * (2 + c)], labels) for c in range(num_bands)
    ]
    high_acc = [
        measures.accuracy(outputs[n * (1 + num_bands + c) : n * (2 + num_bands + c)], labels)
        for c in range(num_bands)
    ]
    origins, directions = measures.random_lines(x_test, config.num_lines, [config.seed, seed, 7])
    s, points = measures.line_points(
        origins, directions, config.line_half_length, config.line_points
    )
    values = np.asarray(predict(points.reshape(-1, points.shape[-1]))).reshape(
        points.shape[:2] + (-1,)
    )
    k, power = measures.line_spectrum(values, s[1] - s[0])
    fractions = [measures.high_frequency_fraction(k, power, c) for c in config.spectrum_cutoffs]
    return dict(
        test_accuracy=accuracy,
        lowpass_accuracy=np.array(low_acc),
        highpass_accuracy=np.array(high_acc),
        k=k,
        spectrum=power,
        high_fraction=np.array(fractions),
    )


def _stack(records: list[dict], name: str):
    return np.array([r[name] for r in records])


# ------------------------------------------------------------------------ kernel regime


def _kernel_modes(phi, y):
    phi, y = np.asarray(phi), np.asarray(y)
    u, s, vt = np.linalg.svd(phi, full_matrices=False)
    projected = u.T @ y  # (r, k)
    outside = float(np.sum((y - u @ projected) ** 2))
    return s, vt, projected, outside, len(y)


def _kernel_at(modes, times, coefficients: bool = True):
    s, vt, projected, outside, n = modes
    lam = s**2 / n
    a, loss = [], []
    for t in np.atleast_1d(times):
        decay = np.exp(-lam * t)
        if coefficients:
            with np.errstate(divide="ignore", invalid="ignore"):
                gain = np.where(s > 0, -np.expm1(-lam * t) / s, 0.0)
            a.append(vt.T @ (gain[:, None] * projected))
        loss.append(0.5 * (np.sum((decay[:, None] * projected) ** 2) + outside) / n)
    return (np.array(a) if coefficients else None), np.array(loss)


def kernel_solution(phi, y, times):
    """The gradient flow of the outer layer alone, $\\dot a = -\\tfrac1n\\Phi^T(\\Phi a - Y)$
    from $a = 0$, in closed form: with $\\Phi = U S V^T$ and $\\lambda_j = s_j^2/n$,
    $a(t) = \\sum_j v_j\\,(1 - e^{-\\lambda_j t})\\,u_j^T Y / s_j$. Returns
    `(a (T, m, k), loss (T,))` at each time of `times` (loss: ½ mean squared error).
    A mode with $\\lambda_j t \\ll 1$ has not moved: no cut-off of small singular values
    is needed (the flow is its own regulariser)."""
    return _kernel_at(_kernel_modes(phi, y), times)


def kernel_time_to_loss(phi, y, loss_tol: float, t_max: float, *, modes=None) -> float:
    """The time at which the outer-layer flow's training loss (monotone decreasing) falls
    to `loss_tol` (bisection in $\\log t$ to 1e-6 relative), or NaN if it is still above
    at `t_max`."""
    modes = modes or _kernel_modes(phi, y)

    def loss(log_t):
        return _kernel_at(modes, [np.exp(log_t)], coefficients=False)[1][0]

    lo, hi = -12.0, float(np.log(t_max))
    if loss(hi) > loss_tol:
        return float("nan")
    if loss(lo) <= loss_tol:
        return float(np.exp(lo))
    while hi - lo > 1e-6:
        mid = 0.5 * (lo + hi)
        if loss(mid) > loss_tol:
            lo = mid
        else:
            hi = mid
    return float(np.exp(hi))


def frozen_layer(config: DigitsConfig, dim: int, seed: int, scale: float):
    """`(W (m, d), b (m,))` of the frozen hidden layer: $\\sigma z$, $\\sigma\\zeta$ with the
    same standard normal draws $(z, \\zeta)$ at every scale $\\sigma$ (NumPy, seeded by
    `(config.seed, seed)`)."""
    rng = np.random.default_rng([config.seed, seed, 1])
    z = rng.standard_normal((config.kernel_width, dim))
    zeta = rng.standard_normal(config.kernel_width)
    return scale * z, scale * zeta


def _features(name: str):
    act = gf.get_activation(name)

    @jax.jit
    def features(x, w, b):
        return act(x @ w.T + b[None, :])

    return features


def kernel_regime(config: DigitsConfig, *, progress: bool = False):
    """The frozen-layer (random features) regime: for every activation, frequency scale
    and seed, the outer layer's flow from $a = 0$ (`kernel_solution`), at the time its
    training loss reaches `loss_tol` (`*_at_tol`) and at `kernel_time` (`*_limit`).

    Variables: `test_accuracy_at_tol`, `test_accuracy_limit`, `train_loss_limit`,
    `time_at_tol` `(activation, scale, seed)`; at `config.scale`, the state at
    `loss_tol`: `lowpass_accuracy`, `highpass_accuracy (activation, seed, band)`,
    `spectrum (activation, seed, k)`, `high_fraction (activation, seed, cutoff)`."""

    images, labels = images_and_labels(config)
    seeds, scales = range(config.num_seeds), config.kernel_scales
    shape = (len(config.activations), len(scales), config.num_seeds)
    acc_tol, acc_limit, loss_limit, t_tol = (np.full(shape, np.nan) for _ in range(4))
    records = {}
    data = [seed_data(config, images, labels, s) for s in seeds]
    for i, name in enumerate(config.activations):
        features = _features(activation_name(config, name))
        for j, scale in enumerate(scales):
            for s in seeds:
                d = data[s]
                w, b = frozen_layer(config, d["x"].shape[1], s, scale)
                w, b = jnp.asarray(w), jnp.asarray(b)
                phi = np.asarray(features(jnp.asarray(d["x"]), w, b))
                modes = _kernel_modes(phi, d["y"])
                t = kernel_time_to_loss(phi, d["y"], config.loss_tol, config.kernel_time,
                                        modes=modes)  # fmt: skip
                t_tol[i, j, s] = t
                (a_tol, a_lim), losses = _kernel_at(
                    modes, [t if np.isfinite(t) else config.kernel_time, config.kernel_time]
                )
                loss_limit[i, j, s] = losses[1]
                test_phi = np.asarray(features(jnp.asarray(d["x_test"]), w, b))
                acc_tol[i, j, s] = measures.accuracy(test_phi @ a_tol, d["test_labels"])
                acc_limit[i, j, s] = measures.accuracy(test_phi @ a_lim, d["test_labels"])
                if scale == config.scale:

                    def predict(inputs, w=w, b=b, a=a_tol):
                        return np.asarray(features(jnp.asarray(inputs), w, b)) @ a

                    records[name, s] = frequency_measures(predict, d, config, s)
            if progress:
                print(f"kernel regime: {name}, scale {scale} done", flush=True)
    return _dataset(
        config,
        records,
        dict(
            test_accuracy_at_tol=(("activation", "scale", "seed"), acc_tol),
            test_accuracy_limit=(("activation", "scale", "seed"), acc_limit),
            train_loss_limit=(("activation", "scale", "seed"), loss_limit),
            time_at_tol=(("activation", "scale", "seed"), t_tol),
        ),
        dict(scale=list(scales)),
        dict(
            regime="kernel",
            width=config.kernel_width,
            kernel_time=config.kernel_time,
            frequency_scale=config.scale,
            test_images=len(data[0]["x_test"]),
        ),  # fmt: skip
    )


def _dataset(config, records, variables, coords, attrs):
    import xarray as xr

    names, seeds = config.activations, range(config.num_seeds)
    first = records[names[0], 0]
    per = {
        key: np.array([[records[a, s][key] for s in seeds] for a in names])
        for key in ("test_accuracy", "lowpass_accuracy", "highpass_accuracy", "spectrum",
                    "high_fraction")
    }  # fmt: skip
    variables = dict(variables)
    variables.update(
        test_accuracy=(("activation", "seed"), per["test_accuracy"]),
        lowpass_accuracy=(("activation", "seed", "band"), per["lowpass_accuracy"]),
        highpass_accuracy=(("activation", "seed", "band"), per["highpass_accuracy"]),
        spectrum=(("activation", "seed", "k"), per["spectrum"]),
        high_fraction=(("activation", "seed", "cutoff"), per["high_fraction"]),
    )
    return xr.Dataset(
        variables,
        coords=dict(
            activation=list(names),
            seed=np.arange(config.num_seeds),
            band=np.arange(len(first["lowpass_accuracy"])),
            k=first["k"],
            cutoff=list(config.spectrum_cutoffs),
            **coords,
        ),
        attrs=dict(
            loss_tol=config.loss_tol,
            train_images=10 * config.train_per_class,
            **attrs,
        ),
    )


# ------------------------------------------------------------------------ adaptive regime


def adaptive_nets(config: DigitsConfig, name: str, dim: int):
    """`num_seeds` stacked nets of `adaptive_width` neurons with 10 outputs, from
    `gradflow.random_net` (i.i.d. $N(0, 1)$ entries) rescaled: with `adaptive_init =
    "outer"` the hidden layer at the kernel regime's scale ($w = \\sigma z$,
    $b = \\sigma\\zeta$, $\\sigma$ = `scale`) and the outer layer $a \\sim N(0, \\varepsilon^2)$;
    with `"small"` every entry $N(0, \\varepsilon^2)$ ($\\varepsilon$ = `init_scale`)."""
    keys = jax.random.split(jax.random.key(config.seed * 7919 + 11), config.num_seeds)
    hidden = config.scale if config.adaptive_init == "outer" else config.init_scale

    def one(key):
        net = gf.random_net(
            key, width=config.adaptive_width, dim=dim, scale=1.0, activation=name, bias=True,
            outputs=10,
        )  # fmt: skip
        return gf.TwoLayerNet(config.init_scale * net.a, hidden * net.W, hidden * net.b, name)

    return jax.vmap(one)(keys)


def _seed(tree, s):
    return jax.tree_util.tree_map(lambda v: v[s], tree)


def _descent(config: DigitsConfig, nets, x, y):
    """Gradient descent from each seed's net, saved at `num_times` log-spaced times; each
    seed's state at the first save time whose loss is ≤ `loss_tol` (else the last).
    Returns `(nets, t_stop, loss, steps)`."""
    eta, t1 = config.relu_learning_rate, config.adaptive_t1
    ts = np.unique(np.round(np.geomspace(eta, t1, config.num_times) / eta)) * eta

    # One compiled program (gradient_descent's own) for every seed: same shapes.
    sols = [
        gf.gradient_descent(
            _seed(nets, s), x[s], y[s], learning_rate=eta, t1=t1, ts=jnp.asarray(ts)
        )
        for s in range(len(x))
    ]
    saved = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *[sol.nets for sol in sols])
    loss = np.stack([np.asarray(sol.loss) for sol in sols])
    times = np.stack([np.asarray(sol.ts) for sol in sols])
    loss = np.asarray(loss)
    below = loss <= config.loss_tol
    index = np.where(below.any(1), np.argmax(below, 1), loss.shape[1] - 1)
    pick = jnp.asarray(index)
    final = jax.tree_util.tree_map(
        lambda v: v[jnp.arange(len(index)), pick] if v.ndim >= 2 else v, saved
    )
    t_stop = np.asarray(times)[np.arange(len(index)), index]
    return final, t_stop, loss[np.arange(len(index)), index], np.rint(t_stop / eta)


def adaptive_regime(config: DigitsConfig, *, progress: bool = False):
    """Every weight trained from `adaptive_nets` (a small outer layer, or all small):
    for every activation the flow on each seed's training set until the loss is below
    `loss_tol` (or `adaptive_t1`, or `max_steps`); ReLU by gradient descent
    (`_descent`) or the exact flow (`relu_method`).

    Variables `(activation, seed)`: `test_accuracy`, `train_loss`, `t_stop`, `steps`
    (solver steps, or GD steps), `status` (0: reached `loss_tol`; 1: reached
    `adaptive_t1` above it; 2: the solver stopped first, at `max_steps` or on a
    failure), `weight_norm` (the median $\\|w_k\\|$ at the end: the frequency scale the
    hidden layer learned), `hidden_move` ($\\|W - W_0\\|/\\|W_0\\|$); the frequency
    measures as in `kernel_regime`; `seconds (activation)`."""
    images, labels = images_and_labels(config)
    data = [seed_data(config, images, labels, s) for s in range(config.num_seeds)]
    x = jnp.asarray(np.stack([d["x"] for d in data]))
    y = jnp.asarray(np.stack([d["y"] for d in data]))
    shape = (len(config.activations), config.num_seeds)
    loss, t_stop, steps, status, norm, move = (np.full(shape, np.nan) for _ in range(6))
    records, seconds, methods = {}, {}, []
    for i, name in enumerate(config.activations):
        start = time.perf_counter()
        registered = activation_name(config, name)
        nets = adaptive_nets(config, registered, x.shape[-1])
        kinked = bool(gf.get_activation(registered).kinks)
        if kinked and config.relu_method == "descent":
            final, t_stop[i], loss[i], steps[i] = _descent(config, nets, x, y)
            status[i] = np.where(loss[i] <= config.loss_tol, 0, 1)
            methods.append(f"gradient descent, η = {config.relu_learning_rate:g}")
        else:
            if kinked:  # the exact Filippov flow, seeds one after another
                options = dict(kinks="exact", max_steps=config.relu_max_steps)
            else:
                options = dict(
                    solver=gf.Unrolled(dfx.Tsit5()), max_steps=config.max_steps,
                    schedule="lockstep", chunk_size=config.num_seeds,
                )  # fmt: skip
            sol = gf.flow_ensemble(
                nets, x, y, t1=config.adaptive_t1, loss_tol=config.loss_tol, rtol=config.rtol,
                progress=progress, **options,
            )  # fmt: skip
            final = sol.net
            loss[i] = np.asarray(sol.final_loss)
            t_stop[i] = np.asarray(sol.t_stop)
            steps[i] = np.asarray(sol.num_steps)
            reached = np.asarray(sol.final_loss) <= config.loss_tol
            status[i] = np.where(np.asarray(sol.status) == 0, np.where(reached, 0, 1), 2)
            methods.append("exact Filippov flow" if kinked else "gradient flow (Tsit5)")
        for s in range(config.num_seeds):
            net = _seed(final, s)
            norm[i, s] = float(np.median(np.linalg.norm(np.asarray(net.W), axis=1)))
            net0 = _seed(nets, s)
            move[i, s] = float(np.linalg.norm(np.asarray(net.W) - np.asarray(net0.W))
                               / np.linalg.norm(np.asarray(net0.W)))  # fmt: skip

            def predict(inputs, net=net):
                return np.asarray(net(jnp.asarray(inputs)))

            records[name, s] = frequency_measures(predict, data[s], config, s)
        seconds[name] = time.perf_counter() - start
        if progress:
            print(f"adaptive regime: {name} done in {seconds[name]:.0f} s", flush=True)
    return _dataset(
        config,
        records,
        dict(
            train_loss=(("activation", "seed"), loss),
            t_stop=(("activation", "seed"), t_stop),
            steps=(("activation", "seed"), steps),
            status=(("activation", "seed"), status),
            weight_norm=(("activation", "seed"), norm),
            hidden_move=(("activation", "seed"), move),
            method=(("activation",), np.array(methods)),
            seconds=(("activation",), np.array([seconds[a] for a in config.activations])),
        ),
        {},
        dict(
            regime="adaptive",
            width=config.adaptive_width,
            init_scale=config.init_scale,
            t1=config.adaptive_t1,
            rtol=config.rtol,
            init=config.adaptive_init,
            max_steps=config.max_steps,
            test_images=len(data[0]["x_test"]),
        ),  # fmt: skip
    )
