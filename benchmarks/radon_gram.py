"""Gram matrices of the Radon toolkit's kernels: gradflow (JAX, compiled) against a NumPy
implementation of the same formulas written here, on 4096 points in 1-D, 2-D and 10-D.

Compiles first, checks the answer against the NumPy peer (and the peer against SciPy's
quadrature on a few entries) before timing, times with `block_until_ready` (best of
`--repeats`), and prints a Markdown table with the machine, date and command.

    python benchmarks/radon_gram.py            # n = 4096
    python benchmarks/radon_gram.py --n 512    # quick
"""

import argparse
import datetime
import math
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
import scipy.special

import gradflow as gf  # noqa: F401  (float64)
import gradflow.radon as radon


# ------------------------------------------------------------------------------------
# NumPy peers: the same closed forms / rules, written independently of gradflow.
# ------------------------------------------------------------------------------------


def numpy_relu_gaussian(x, sw=1.0, sb=1.0):
    s12 = sw**2 * x @ x.T + sb**2
    d = sw**2 * np.sum(x**2, 1) + sb**2
    norm = np.sqrt(np.outer(d, d))
    theta = np.arccos(np.clip(s12 / norm, -1, 1))
    return norm * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)


def numpy_erf_gaussian(x, sw=1.0, sb=1.0):
    s12 = sw**2 * x @ x.T + sb**2
    d = 1 + 2 * (sw**2 * np.sum(x**2, 1) + sb**2)
    return 2 / np.pi * np.arcsin(2 * s12 / np.sqrt(np.outer(d, d)))


def numpy_gaussian_whole_line(x, nodes=48):
    # E_u[√π exp(−(r u)²/4)], u = ξ₁, density ∝ (1 − u²)^{(d−3)/2}: SciPy's Gegenbauer rule.
    d = x.shape[1]
    u, w = scipy.special.roots_gegenbauer(nodes, (d - 2) / 2)
    w = w / w.sum()
    r2 = np.maximum(np.sum(x**2, 1)[:, None] + np.sum(x**2, 1)[None, :] - 2 * x @ x.T, 0)
    out = np.zeros_like(r2)
    for uj, wj in zip(u, w):
        out += wj * math.sqrt(math.pi) * np.exp(-r2 * uj**2 / 4)
    return out


def numpy_relu_radon_2d(x, radius, nodes=256):
    angles = 2 * np.pi * (np.arange(nodes) + 0.5) / nodes
    out = np.zeros((x.shape[0], x.shape[0]))
    for a in angles:
        p = x @ np.array([np.cos(a), np.sin(a)])
        s, t = p[:, None], p[None, :]
        top = np.clip(np.minimum(s, t), -radius, radius)

        def F(g):
            return s * t * g - 0.5 * (s + t) * g**2 + g**3 / 3

        out += (F(top) - F(-radius)) / (2 * radius) / nodes
    return out


def scipy_reference(case, x, i, j):
    """A few entries by adaptive quadrature of the defining expectation."""
    xi, xj = x[i], x[j]
    if case == "relu-gauss-1d":
        s11, s22, s12 = xi @ xi + 1, xj @ xj + 1, xi @ xj + 1
        tau = math.sqrt(max(s22 - s12**2 / s11, 0))

        def cond(u):
            mu = s12 / s11 * u
            if tau < 1e-12:
                return max(mu, 0)
            return mu * scipy.special.ndtr(mu / tau) + tau * math.exp(-0.5 * (mu / tau) ** 2) / (
                math.sqrt(2 * math.pi)
            )

        sig = math.sqrt(s11)

        def f(u):
            return (
                max(u, 0)
                * cond(u)
                * math.exp(-0.5 * (u / sig) ** 2)
                / (  # noqa: E731
                    sig * math.sqrt(2 * math.pi)
                )
            )

        return scipy.integrate.quad(f, 0, 14 * sig, epsabs=1e-14)[0]
    return None


CASES = [
    # name, dim, kernel, numpy peer
    ("relu-gauss-1d", 1, radon.Kernel("relu", radon.GaussianWeights(), dim=1), numpy_relu_gaussian),
    (
        "relu-radon-2d",
        2,
        radon.Kernel("relu", radon.RadonDensity(radon.UniformOffsets(3.0)), dim=2),
        lambda x: numpy_relu_radon_2d(x, 3.0),
    ),
    ("erf-gauss-10d", 10, radon.Kernel("erf", radon.GaussianWeights(), dim=10), numpy_erf_gaussian),
    (
        "gaussian-radon-10d",
        10,
        radon.Kernel("gaussian", radon.RadonDensity(), dim=10),
        numpy_gaussian_whole_line,
    ),
]


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# radon_gram  {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"# machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
          f"{platform.platform()}; jax {jax.__version__}, numpy {np.__version__}")  # fmt: skip
    print(f"# command: python {' '.join(sys.argv)}")
    print()
    print("| kernel | d | n | compile+first (s) | gradflow (s) | NumPy (s) | NumPy/gradflow "
          "| max rel. diff vs NumPy | vs SciPy |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, dim, kernel, peer in CASES:
        x = np.asarray(jax.random.normal(jax.random.key(dim), (args.n, dim)))
        xj = jnp.asarray(x)
        start = time.perf_counter()
        gram = kernel.gram(xj).block_until_ready()
        first = time.perf_counter() - start
        reference = peer(x)
        scale = np.max(np.abs(reference))
        diff = float(np.max(np.abs(np.asarray(gram) - reference)) / scale)
        scipy_check = "-"
        ref_entries = [scipy_reference(name, x, i, j) for i, j in [(0, 1), (2, 3), (5, 5)]]
        if ref_entries[0] is not None:
            got = [float(gram[i, j]) for i, j in [(0, 1), (2, 3), (5, 5)]]
            scipy_check = f"{max(abs(g / r - 1) for g, r in zip(got, ref_entries)):.1e}"
        if diff > 1e-10:
            raise SystemExit(f"{name}: gradflow and NumPy differ by {diff:.1e}; not timing.")
        t_jax = best_of(lambda: kernel.gram(xj).block_until_ready(), args.repeats)
        t_np = best_of(lambda: peer(x), 1)
        print(f"| {name} | {dim} | {args.n} | {first:.2f} | {t_jax:.3f} | {t_np:.3f} | "
              f"{t_np / t_jax:.1f} | {diff:.1e} | {scipy_check} |")  # fmt: skip
    try:
        import neural_tangents  # noqa: F401
    except Exception as error:  # noqa: BLE001
        print(f"\nneural-tangents: not importable here ({type(error).__name__}: {error}).")


if __name__ == "__main__":
    main()
