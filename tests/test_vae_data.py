"""Data for the discrete VAE (rl_relax.vae.data): the bundled digits and the local-file loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl_relax.vae import data


def test_bundled_digits_threshold_binarization_and_fixed_split():
    splits = data.load_digits()
    assert [s.shape for s in (splits.train, splits.valid, splits.test)] == [(1197, 64), (300, 64), (300, 64)]
    assert splits.num_pixels == 64 and splits.image_shape == (8, 8)
    for part in (splits.train, splits.valid, splits.test):
        assert part.dtype == torch.float32 and set(part.unique().tolist()) == {0.0, 1.0}
    # The same split every time, independent of any global seed, and the three parts are disjoint images.
    torch.manual_seed(123)
    again = data.load_digits()
    assert torch.equal(splits.train, again.train) and torch.equal(splits.test, again.test)
    assert 0.3 < splits.train.mean().item() < 0.5  # digits cover about 40% of the 8x8 pixels at threshold 8


def test_threshold_is_pixel_at_least_threshold():
    low, high = data.load_digits(threshold=1), data.load_digits(threshold=16)
    assert torch.all(low.train >= high.train)  # a lower threshold only turns pixels on
    assert low.train.mean() > data.load_digits().train.mean() > high.train.mean()


def test_sampled_binarization_is_fixed_by_its_seed():
    a, b = data.load_digits("sample", binarize_seed=0), data.load_digits("sample", binarize_seed=0)
    c = data.load_digits("sample", binarize_seed=1)
    assert torch.equal(a.train, b.train) and not torch.equal(a.train, c.train)
    # Bernoulli(pixel / 16) has about the same mean as thresholding at 8
    assert abs(a.train.mean().item() - data.load_digits().train.mean().item()) < 0.05


def test_bad_digits_options_are_one_line_errors():
    with pytest.raises(data.DataError, match="binarize="):
        data.load_digits("round")
    with pytest.raises(data.DataError, match="threshold="):
        data.load_digits(threshold=17)


def write_amat(path, images):
    np.savetxt(path, images, fmt="%d")


def test_binarized_mnist_directory_of_amat_files(tmp_path):
    rng = np.random.default_rng(0)
    sizes = {"train": 7, "valid": 3, "test": 4}
    for split, n in sizes.items():
        write_amat(tmp_path / f"binarized_mnist_{split}.amat", rng.integers(0, 2, (n, 784)))
    splits = data.load_file(tmp_path)
    assert (splits.train.shape, splits.valid.shape, splits.test.shape) == ((7, 784), (3, 784), (4, 784))
    assert splits.image_shape == (28, 28)
    expected = np.loadtxt(tmp_path / "binarized_mnist_valid.amat")
    assert np.array_equal(splits.valid.numpy(), expected)


def test_single_files_are_split_80_10_10_and_grey_levels_binarized(tmp_path):
    images = np.random.default_rng(1).random((50, 16))
    np.save(tmp_path / "x.npy", images)
    splits = data.load_file(tmp_path / "x.npy")
    assert (splits.train.shape[0], splits.valid.shape[0], splits.test.shape[0]) == (40, 5, 5)
    everything = torch.cat([splits.train, splits.valid, splits.test])
    expected = torch.from_numpy((images >= 0.5).astype(np.float32))
    assert sorted(map(tuple, everything.tolist())) == sorted(map(tuple, expected.tolist()))  # a permutation


def test_npz_with_named_splits(tmp_path):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 2, (6, 9)), x_valid=rng.integers(0, 2, (2, 9)),
             x_test=rng.integers(0, 2, (3, 9)))  # fmt: skip
    splits = data.load_file(tmp_path / "d.npz")
    assert (splits.train.shape, splits.valid.shape, splits.test.shape) == ((6, 9), (2, 9), (3, 9))


def test_omniglot_chardata_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(3)
    scipy_io.savemat(tmp_path / "chardata.mat", {"data": rng.random((784, 30)), "testdata": rng.random((784, 8))})
    splits = data.load_file(tmp_path / "chardata.mat")
    assert (splits.train.shape, splits.valid.shape, splits.test.shape) == ((27, 784), (3, 784), (8, 784))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.npy", None, "does not exist"),
        ("x.txt", "0 1", "unsupported file type"),
        ("x.npy", np.ones(5), "2-D array"),
        ("x.npy", np.full((4, 3), 2.0), r"\[0, 1\]"),
        ("x.amat", "0 1 a", "numeric .amat"),
        ("x.npz", {"a": np.ones((3, 2)), "b": np.ones((3, 2))}, "expected train/valid/test"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(data.DataError, match=message) as info:
        data.load_file(path)
    assert "\n" not in str(info.value)


def test_directory_without_the_amat_files(tmp_path):
    with pytest.raises(data.DataError, match=r"lacks binarized_mnist_train\.amat"):
        data.load_file(tmp_path)
