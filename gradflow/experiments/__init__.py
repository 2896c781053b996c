"""Paper reproductions: thin layers of configuration → engine call → labelled result → figure.

- `gradflow.experiments.single_neuron`: single-neuron target recovery (Zhao, Bai & Zhang,
  arXiv:2405.13787).
"""

from . import single_neuron as single_neuron
