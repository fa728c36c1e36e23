"""Binarized image data for the discrete VAE: the bundled 8x8 digits, or a local binarized MNIST / Omniglot.

Bundled (no download, no extra dependency): ``digits8x8.npz`` holds the 1797 8x8 grey-level digits of
the UCI "Optical Recognition of Handwritten Digits" data set (Alpaydin & Kaynak 1998, CC BY 4.0), the
copy scikit-learn ships as ``load_digits`` (pixels are integers 0..16). They are binarized here:

- ``binarize="threshold"``: x = 1[pixel >= threshold] (default threshold 8, half the range);
- ``binarize="sample"``: x ~ Bernoulli(pixel / 16), drawn once with ``binarize_seed`` (a fixed
  stochastic binarization, as Salakhutdinov & Murray's binarized MNIST).

The split is fixed: a permutation drawn with seed 0 puts 1197 digits in train, 300 in validation and
300 in test, whatever the training seed.

Local files (``load_file``), nothing fetched at run time:

- a directory holding ``binarized_mnist_{train,valid,test}.amat`` (Larochelle & Murray 2011: one image a
  line, 784 space-separated 0/1 values);
- one ``.amat`` file, one ``.npy`` array (N, D) or a ``.npz`` with ``train``/``valid``/``test`` (or
  ``x_train``/``x_valid``/``x_test``) arrays; a single array is split 80/10/10 with a fixed permutation;
- Omniglot's ``chardata.mat`` (Burda et al. 2016: ``data`` and ``testdata``, pixels in columns; needs
  SciPy), whose last 1345 training images (as in Burda et al.'s split) become the validation set.

Values outside {0, 1} (grey levels in [0, 1]) are binarized with ``x >= 0.5``.
"""

from __future__ import annotations

import dataclasses
import math
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from rl_relax.errors import RlRelaxError

DIGITS_FILE = "digits8x8.npz"
DIGITS_SPLIT = (1197, 300, 300)
OMNIGLOT_VALID = 1345
BINARIZATIONS = ("threshold", "sample")


class DataError(RlRelaxError):
    """A data file that is missing or not in a supported layout."""


@dataclasses.dataclass(frozen=True)
class Splits:
    """Binary float32 images, flattened: each split has shape (N, D) with values in {0, 1}."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    name: str

    @property
    def num_pixels(self) -> int:
        return int(self.train.shape[1])

    @property
    def image_shape(self) -> tuple[int, int]:
        side = math.isqrt(self.num_pixels)
        return (side, side) if side * side == self.num_pixels else (1, self.num_pixels)

    def train_mean(self) -> torch.Tensor:
        """Per-pixel mean of the training images (the encoder centres its input with it)."""
        return self.train.mean(0)


def load_digits(binarize: str = "threshold", threshold: int = 8, binarize_seed: int = 0) -> Splits:
    """The bundled 8x8 digits, binarized, in the fixed 1197/300/300 split (64 pixels each)."""
    if binarize not in BINARIZATIONS:
        raise DataError(f"binarize={binarize!r} is not one of {', '.join(BINARIZATIONS)}. Fix: binarize=threshold.")
    if not 0 < threshold <= 16:
        raise DataError(f"threshold={threshold!r} must be in 1..16 (pixels are 0..16). Fix: threshold=8.")
    with resources.files("rl_relax.vae").joinpath("data", DIGITS_FILE).open("rb") as handle:
        pixels = np.load(handle)["pixels"].astype(np.float64)
    if binarize == "threshold":
        binary = pixels >= threshold
    else:
        binary = np.random.default_rng(binarize_seed).random(pixels.shape) < pixels / 16.0
    order = np.random.default_rng(0).permutation(len(binary))
    n_train, n_valid, _ = DIGITS_SPLIT
    parts = np.split(binary[order], [n_train, n_train + n_valid])
    return Splits(*(_tensor(p) for p in parts), name="digits8x8")


def load_file(path: str | Path) -> Splits:
    """Binarized images from a local file or directory (formats in the module docstring)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data.path={str(path)!r} does not exist. Fix: point data.path at a local file or directory.")
    if path.is_dir():
        names = [path / f"binarized_mnist_{split}.amat" for split in ("train", "valid", "test")]
        missing = [n.name for n in names if not n.exists()]
        if missing:
            raise DataError(
                f"directory {str(path)!r} lacks {', '.join(missing)}. Fix: give the .amat files' directory."
            )
        return Splits(*(_binary(_read_amat(n), n) for n in names), name=path.name)
    suffix = path.suffix.lower()
    if suffix == ".amat":
        return _split_one(_binary(_read_amat(path), path), path.stem)
    if suffix == ".npy":
        return _split_one(_binary(_checked(np.load(path, allow_pickle=False), path), path), path.stem)
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".mat":
        return _read_omniglot(path)
    raise DataError(f"{str(path)!r}: unsupported file type {suffix!r}. Fix: use .amat, .npy, .npz or .mat.")


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _checked(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise DataError(f"{str(path)!r}: expected a 2-D array (images, pixels), got shape {array.shape}.")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise DataError(f"{str(path)!r}: pixel values must lie in [0, 1]. Fix: rescale the images to [0, 1].")
    return array


def _binary(array: np.ndarray, path: Path) -> torch.Tensor:
    return _tensor(_checked(np.asarray(array, dtype=np.float64), path) >= 0.5)


def _read_amat(path: Path) -> np.ndarray:
    try:
        return np.atleast_2d(np.loadtxt(path, dtype=np.float64))
    except ValueError as exc:
        raise DataError(f"{str(path)!r} is not a whitespace-separated numeric .amat file ({exc}).") from None


def _split_one(images: torch.Tensor, name: str) -> Splits:
    n = images.shape[0]
    if n < 3:
        raise DataError(f"{name}: {n} images cannot be split into train/valid/test. Fix: give at least 3 images.")
    order = torch.from_numpy(np.random.default_rng(0).permutation(n))
    n_valid = n_test = max(1, n // 10)
    shuffled = images[order]
    return Splits(shuffled[n_valid + n_test :], shuffled[:n_valid], shuffled[n_valid : n_valid + n_test], name=name)


def _read_npz(path: Path) -> Splits:
    with np.load(path, allow_pickle=False) as archive:
        keys = set(archive.files)
        for names in (("train", "valid", "test"), ("x_train", "x_valid", "x_test")):
            if set(names) <= keys:
                return Splits(*(_binary(archive[k], path) for k in names), name=path.stem)
        if len(keys) == 1:
            return _split_one(_binary(archive[next(iter(keys))], path), path.stem)
    raise DataError(
        f"{str(path)!r} holds arrays {sorted(keys)}; expected train/valid/test (or x_train/x_valid/x_test) "
        "or a single array."
    )


def _read_omniglot(path: Path) -> Splits:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError("reading a .mat file needs SciPy. Fix: pip install scipy.") from None
    mat = loadmat(path)
    if "data" not in mat or "testdata" not in mat:
        raise DataError(f"{str(path)!r} has no 'data' and 'testdata' (Omniglot chardata.mat layout).")
    train = _binary(np.asarray(mat["data"], dtype=np.float64).T, path)
    test = _binary(np.asarray(mat["testdata"], dtype=np.float64).T, path)
    n_valid = min(OMNIGLOT_VALID, train.shape[0] // 10 or 1)
    return Splits(train[:-n_valid], train[-n_valid:], test, name=path.stem)
