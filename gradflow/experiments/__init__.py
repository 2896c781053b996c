"""Paper reproductions: thin layers of configuration → engine call → labelled result → figure.

- `gradflow.experiments.single_neuron`: single-neuron target recovery (Zhao, Bai & Zhang,
  arXiv:2405.13787).
- `gradflow.experiments.spectral_bias`: the spectral bias of shallow networks and the
  kernel regime (Sahs, Pyle, Anselmi & Patel, arXiv:2503.10587).
- `gradflow.experiments.adaptive_regime`: breakplane clusters and data-point pinning with
  all weights trained from small init (Sahs et al., the adaptive regime).
- `gradflow.experiments.digits`: spectral bias on handwritten digits, per activation, in
  the kernel and the adaptive regimes (Sahs et al.).
- `gradflow.experiments.optimization_threshold`: the optimization threshold and early
  alignment (Boursier & Flammarion).

Each has `reproduce` (every figure beside its numbers) and `gradflow reproduce NAME`.
"""

from . import (
    adaptive_regime as adaptive_regime,
    digits as digits,
    optimization_threshold as optimization_threshold,
    single_neuron as single_neuron,
    spectral_bias as spectral_bias,
)
