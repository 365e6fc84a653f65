"""cnnjax.ops.kernels: the classic filters and what they do to simple images."""

import numpy as np
import pytest

from cnnjax.ops import conv2d, kernels

EDGE_KERNELS = ["laplacian", "horizontal_edges", "vertical_edges", "sobel_x", "sobel_y"]


def test_classic_names_shapes_and_dtypes():
    assert list(kernels.CLASSIC) == [
        "box_blur",
        "gaussian",
        "sharpen",
        "laplacian",
        "horizontal_edges",
        "vertical_edges",
        "sobel_x",
        "sobel_y",
    ]
    for name, kernel in kernels.CLASSIC.items():
        assert kernel.dtype == np.float32, name
        assert kernel.shape == ((5, 5) if name == "gaussian" else (3, 3)), name
        assert not kernel.flags.writeable, name
    np.testing.assert_array_equal(kernels.SHARPEN, [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])


def test_constants_are_read_only():
    with pytest.raises(ValueError):
        kernels.SHARPEN[1, 1] = 0


@pytest.mark.parametrize("size", [1, 3, 5])
def test_box_blur(size):
    kernel = kernels.box_blur(size)
    assert kernel.shape == (size, size)
    np.testing.assert_allclose(kernel.sum(), 1, rtol=1e-6)
    assert np.all(kernel == kernel[0, 0])


@pytest.mark.parametrize("size, sigma", [(5, 1.0), (3, 0.5), (7, 2.0), (4, 1.0)])
def test_gaussian_sums_to_one_and_is_symmetric(size, sigma):
    kernel = kernels.gaussian(size, sigma)
    assert kernel.shape == (size, size)
    np.testing.assert_allclose(kernel.sum(), 1, rtol=1e-6)
    np.testing.assert_allclose(kernel, kernel.T, rtol=1e-6)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], rtol=1e-6)
    # Largest at the centre, decreasing outwards along the middle row.
    middle = kernel[(size - 1) // 2]
    assert np.all(np.diff(middle[: (size + 1) // 2]) > 0)


def test_gaussian_wider_sigma_is_flatter():
    assert kernels.gaussian(5, 2.0).max() < kernels.gaussian(5, 1.0).max()


@pytest.mark.parametrize("name", EDGE_KERNELS)
def test_edge_kernels_sum_to_zero(name):
    assert kernels.CLASSIC[name].sum() == 0
    # Hence a flat image gives 0 wherever no padding is involved.
    flat = np.full((6, 6), 7.0, np.float32)
    np.testing.assert_array_equal(conv2d(flat, kernels.CLASSIC[name]), np.zeros((4, 4)))


def test_blur_and_sharpen_keep_flat_images():
    flat = np.full((7, 7), 3.0, np.float32)
    for kernel in (kernels.box_blur(), kernels.gaussian(), kernels.SHARPEN):
        np.testing.assert_allclose(conv2d(flat, kernel), 3.0, rtol=1e-6)


def test_edge_directions():
    # Bright left half, dark right half: a vertical edge between columns 2 and 3.
    vertical = np.zeros((6, 6), np.float32)
    vertical[:, :3] = 1
    assert np.all(conv2d(vertical, kernels.VERTICAL_EDGES)[:, 1:3] == 3)  # bright left: positive
    assert np.all(conv2d(vertical, kernels.SOBEL_X)[:, 1:3] == -4)  # darker going right
    np.testing.assert_array_equal(conv2d(vertical, kernels.HORIZONTAL_EDGES), 0)
    np.testing.assert_array_equal(conv2d(vertical, kernels.SOBEL_Y), 0)
    # Its transpose (bright top, dark bottom) is a horizontal edge.
    horizontal = vertical.T
    assert np.all(conv2d(horizontal, kernels.HORIZONTAL_EDGES)[1:3] == 3)
    assert np.all(conv2d(horizontal, kernels.SOBEL_Y)[1:3] == -4)
    np.testing.assert_array_equal(conv2d(horizontal, kernels.VERTICAL_EDGES), 0)
    # The Laplacian responds on both sides of the edge with opposite signs.
    lap = conv2d(vertical, kernels.LAPLACIAN)
    np.testing.assert_array_equal(lap[0], [0, -1, 1, 0])


def test_sobel_magnitude():
    flat = np.full((6, 7), 5.0, np.float32)
    magnitude = kernels.sobel_magnitude(flat)
    assert magnitude.shape == (6, 7)
    np.testing.assert_array_equal(magnitude[1:-1, 1:-1], 0)  # the border sees the zero padding
    np.testing.assert_array_equal(kernels.sobel_magnitude(flat, padding="VALID"), 0)

    step = np.zeros((6, 8), np.float32)
    step[:, 4:] = 1  # dark left, bright right: an edge between columns 3 and 4
    magnitude = np.asarray(kernels.sobel_magnitude(step, padding="VALID"))
    assert magnitude.shape == (4, 6)
    # Windows centred on columns 3 and 4 straddle the edge: |gx| = 1 + 2 + 1 = 4, gy = 0.
    np.testing.assert_array_equal(magnitude[:, 2:4], 4)
    np.testing.assert_array_equal(magnitude[:, :2], 0)
    np.testing.assert_array_equal(magnitude[:, 4:], 0)
    # A diagonal step gets both components.
    diagonal = np.triu(np.ones((5, 5), np.float32))
    assert np.all(np.asarray(kernels.sobel_magnitude(diagonal, padding="VALID")).diagonal() > 0)


@pytest.mark.parametrize(
    "call",
    [lambda: kernels.box_blur(0), lambda: kernels.gaussian(0), lambda: kernels.gaussian(3, 0.0)],
)
def test_errors(call):
    with pytest.raises(ValueError):
        call()
