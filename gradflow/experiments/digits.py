"""Spectral bias on handwritten digits: the activation decides which frequencies a shallow
network learns (Sahs, Pyle, Anselmi & Patel, *The spectral bias of shallow neural network
learning is shaped by the choice of non-linearity*,
[arXiv:2503.10587](https://arxiv.org/abs/2503.10587)), measured on real data.

A configuration (`DigitsConfig`: scikit-learn's bundled 8×8 digits, or MNIST from IDX
files through `read_idx`) → `kernel_regime` (a frozen random hidden layer, the outer
layer's gradient flow from 0) and `adaptive_regime` (small init, every weight trained)
for ReLU, tanh, Gaussian, sinc, sinc² and a designed band-pass activation → labelled
`xarray.Dataset`s with test accuracies and two frequency-resolved measures (accuracy on
DCT low-/high-pass filtered test images; the learned function's spectrum along random
lines through the data) → figures. `reproduce` does all of it; so does
`gradflow reproduce digits [--quick]`.
"""

from ._digits.config import (
    ACTIVATIONS as ACTIVATIONS,
    DigitsConfig as DigitsConfig,
    gaussian_band_target as gaussian_band_target,
    quick_config as quick_config,
)
from ._digits.data import (
    IDXError as IDXError,
    load_digits as load_digits,
    load_mnist as load_mnist,
    one_hot as one_hot,
    Preprocessing as Preprocessing,
    read_idx as read_idx,
    stratified_split as stratified_split,
    write_idx as write_idx,
)
from ._digits.figures import (
    accuracy_figure as accuracy_figure,
    filtered_figure as filtered_figure,
    scales_figure as scales_figure,
    spectra_figure as spectra_figure,
)
from ._digits.measures import (
    accuracy as accuracy,
    band_energy as band_energy,
    bands as bands,
    dct2 as dct2,
    dct_filter as dct_filter,
    dct_matrix as dct_matrix,
    high_frequency_fraction as high_frequency_fraction,
    idct2 as idct2,
    line_points as line_points,
    line_spectrum as line_spectrum,
    random_lines as random_lines,
)
from ._digits.reproduce import (
    DESCRIPTION as DESCRIPTION,
    reproduce as reproduce,
    run_all as run_all,
    summary_text as summary_text,
)
from ._digits.run import (
    adaptive_nets as adaptive_nets,
    adaptive_regime as adaptive_regime,
    designed_activation as designed_activation,
    frequency_measures as frequency_measures,
    frozen_layer as frozen_layer,
    images_and_labels as images_and_labels,
    kernel_regime as kernel_regime,
    kernel_solution as kernel_solution,
    kernel_time_to_loss as kernel_time_to_loss,
    seed_data as seed_data,
)
