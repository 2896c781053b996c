"""Paper reproductions: thin layers of configuration → engine call → labelled result → figure.

- `gradflow.experiments.single_neuron`: single-neuron target recovery (Zhao, Bai & Zhang,
  arXiv:2405.13787).
- `gradflow.experiments.spectral_bias`: the spectral bias of shallow networks and the
  kernel regime (Sahs, Pyle, Anselmi & Patel, arXiv:2503.10587).
"""

from . import single_neuron as single_neuron, spectral_bias as spectral_bias
