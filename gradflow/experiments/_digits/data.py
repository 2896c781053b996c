"""Handwritten digits: scikit-learn's bundled 8×8 set (offline), MNIST through a NumPy IDX
reader, a stratified split per seed, and the preprocessing every image goes through.

The IDX format (LeCun's MNIST files): a big-endian header of two zero bytes, a type
byte (0x08 = unsigned byte), a byte giving the number of dimensions, then one
big-endian uint32 per dimension, then the data in C order. Images have magic
0x00000803 (three dimensions: count, rows, columns), labels 0x00000801 (one)."""

import pathlib

import numpy as np


IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
_UNSIGNED_BYTE = 0x08
# The other IDX type bytes (signed byte, short, int, float, double): named in errors.
_IDX_TYPES = {
    0x08: "ubyte",
    0x09: "byte",
    0x0B: "short",
    0x0C: "int",
    0x0D: "float",
    0x0E: "double",
}

_KINDS = {3: "images", 1: "labels"}

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class IDXError(ValueError):
    """A file that is not the IDX file it should be (the message names the file)."""


def read_idx(path, *, dims: int | None = None) -> np.ndarray:
    """The array of one IDX file (a `.gz` file is decompressed), as `uint8`.

    **Arguments:**

    - `path`: the file.
    - `dims`: the number of dimensions the file must have (3 for images, 1 for labels);
      `None` accepts any.

    **Raises** `IDXError` naming the file and what is wrong: a header shorter than its
    own description, nonzero leading bytes (not IDX), a type byte other than 0x08
    (unsigned byte; MNIST's only type), the wrong number of dimensions, or a data
    length that does not match the header's shape (truncated or trailing bytes).
    """
    path = pathlib.Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        import gzip

        raw = gzip.decompress(raw)
    if len(raw) < 4:
        raise IDXError(f"{path}: {len(raw)} bytes, shorter than the 4-byte IDX magic number.")
    if raw[0] != 0 or raw[1] != 0:
        raise IDXError(
            f"{path}: not an IDX file (magic number 0x{raw[:4].hex()} does not start with two "
            "zero bytes)."
        )
    kind, ndim = raw[2], raw[3]
    if kind != _UNSIGNED_BYTE:
        name = _IDX_TYPES.get(kind, "unknown")
        raise IDXError(
            f"{path}: data type byte 0x{kind:02x} ({name}); only 0x08 (unsigned byte, the "
            "type of the MNIST files) is supported."
        )
    if dims is not None and ndim != dims:
        raise IDXError(
            f"{path}: {ndim} dimensions (magic 0x{raw[:4].hex()}), expected {dims} (magic "
            f"0x{0x800 + dims:08x}: {_KINDS.get(dims, 'data')})."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(
            f"{path}: truncated header: {ndim} dimensions need {header} bytes, the file has "
            f"{len(raw)}."
        )
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes"
        raise IDXError(
            f"{path}: {what}: the header's shape {shape} needs {expected} data bytes, the file "
            f"has {found}."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def write_idx(path, array) -> None:
    """Writes a `uint8` array as an IDX file (the inverse of `read_idx`; for tests and for
    making small MNIST-format files)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"`array` must have dtype uint8 (IDX type 0x08), got {array.dtype}.")
    header = bytes([0, 0, _UNSIGNED_BYTE, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    pathlib.Path(path).write_bytes(header + array.tobytes())


def _find(directory: pathlib.Path, stem: str) -> pathlib.Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(
        f"`mnist_path`: no {stem} (or {stem}.gz) in {directory}. Give the directory that "
        "holds the four MNIST IDX files."
    )


def load_mnist(directory, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """`(images (N, 28, 28) uint8, labels (N,) uint8)` of MNIST's `"train"` or `"test"` split
    from `directory` (the files as distributed, optionally gzipped); nothing is
    downloaded. Images and labels must agree in count."""
    if split not in MNIST_FILES:
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    directory = pathlib.Path(directory)
    image_file, label_file = (_find(directory, stem) for stem in MNIST_FILES[split])
    images = read_idx(image_file, dims=3)
    labels = read_idx(label_file, dims=1)
    if len(images) != len(labels):
        raise IDXError(
            f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels."
        )
    if labels.size and labels.max() > 9:
        raise IDXError(f"{label_file}: labels must be digits 0-9, found {int(labels.max())}.")
    return images, labels


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (1797 images, values 0-16, no download):
    `(images (1797, 8, 8) float64, labels (1797,) int)`."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The digits experiment needs scikit-learn for its bundled 8×8 digits: "
            "`pip install scikit-learn` (or `gradflow[all]`), or set `mnist_path`."
        ) from error
    bunch = _load()
    return np.asarray(bunch.images, np.float64), np.asarray(bunch.target)


def stratified_split(labels, per_class: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """`(train, test)` indices: `per_class` images of each digit drawn without replacement
    by `numpy.random.default_rng(seed)` for training, every other image for testing."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        if len(members) <= per_class:
            raise ValueError(
                f"`train_per_class` = {per_class} leaves no test image of digit {digit} "
                f"({len(members)} images); lower it."
            )
        train.append(rng.choice(members, per_class, replace=False))
    train = np.sort(np.concatenate(train))
    test = np.setdiff1d(np.arange(len(labels)), train)
    return train, test


class Preprocessing:
    """Centre and scale: $x = (v - \\bar v)/s$ for a flattened image $v$, with $\\bar v$ the
    training set's mean image and $s$ the root-mean-square norm of the centred training
    images, so the training inputs have mean 0 and mean squared norm 1. One affine map
    for every image (not a per-image normalisation), so a filter applied to the centred
    images commutes with it (see `measures.dct_filter`)."""

    def __init__(self, train_images):
        flat = np.asarray(train_images, np.float64).reshape(len(train_images), -1)
        self.mean = flat.mean(0)
        self.scale = float(np.sqrt(np.mean(np.sum((flat - self.mean) ** 2, 1))))
        self.shape = np.asarray(train_images).shape[1:]

    def __call__(self, images) -> np.ndarray:
        flat = np.asarray(images, np.float64).reshape(len(images), -1)
        return (flat - self.mean) / self.scale


def one_hot(labels, classes: int = 10) -> np.ndarray:
    """Targets $y_i = e_{\\text{label}_i} \\in \\mathbb{R}^{10}$."""
    return np.eye(classes)[np.asarray(labels)]
