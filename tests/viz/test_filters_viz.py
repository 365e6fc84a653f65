"""Conv filter tiles and weight histograms (cnnjax.viz.filters)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from viz_testing import check_png, lenet

from cnnjax.errors import UserError
from cnnjax.models import get_model
from cnnjax.viz import filters


@pytest.fixture
def gray_params():
    return lenet(1)[1]["params"]


def _images(fig):
    return [im for ax in fig.axes for im in ax.images]


def test_conv_kernel_paths_order(gray_params):
    # Stand-in params went through jax.tree.map, which sorts keys ("conv1" < "fc1" < "head").
    assert filters.conv_kernel_paths(gray_params) == ["conv1", "conv2"]
    assert filters.conv_kernel_paths({"params": gray_params}) == ["conv1", "conv2"]
    k = np.zeros((3, 3, 2, 2))
    params = {
        "head": {"kernel": np.zeros((4, 2))},  # 2-D: not a conv.
        "conv10": {"kernel": k},
        "conv2": {"kernel": k, "bias": np.zeros(2)},
        "stem": {"kernel": k},
        "block2": {"conv1": {"kernel": k}},
    }
    assert filters.conv_kernel_paths(params) == ["stem", "block2/conv1", "conv2", "conv10"]


def test_conv_kernel_paths_resnet_first_layer_is_stem():
    model = get_model("resnet18", num_classes=10, stem="cifar")
    variables = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )
    paths = filters.conv_kernel_paths(variables["params"])
    assert paths[:4] == [
        "stem_conv",
        "stage1_block1/conv1",
        "stage1_block1/conv2",
        "stage1_block2/conv1",
    ]
    assert "stage2_block1/proj_conv" in paths and len(paths) == 20


def test_first_layer_grey_tiles(gray_params, tmp_path):
    path = tmp_path / "conv1.png"
    fig = filters.conv_filters(gray_params, path=str(path), title="t")
    images = _images(fig)
    assert len(images) == 8  # One tile per filter.
    for im in images:
        data = np.ma.filled(im.get_array().astype(float), np.nan)
        assert data.shape == (5, 5)
        assert np.nanmin(data) == 0.0 and np.nanmax(data) == 1.0  # Min-max per filter.
    assert "conv1" in fig._suptitle.get_text()
    check_png(path)


def test_rgb_tiles_and_caps(tmp_path):
    params = lenet(3)[1]
    path = tmp_path / "rgb.png"
    fig = filters.conv_filters(params, "conv1", path=str(path))
    images = _images(fig)
    assert len(images) == 8
    for im in images:
        data = np.asarray(im.get_array())
        assert data.shape == (5, 5, 3)
        assert data.min() >= 0.0 and data.max() <= 1.0
    check_png(path)
    fig = filters.conv_filters(params, "conv2", max_filters=5, max_channels=3)
    images = _images(fig)
    assert len(images) == 5  # The first 5 of 16 filters.
    assert images[0].get_array().shape == (3 * 6 - 1, 5)  # 3 of the 8 input channels.
    assert "first 3 of 8" in fig._suptitle.get_text()
    assert "first 5 of 16 filters" in fig._suptitle.get_text()


def test_per_channel_tiles(gray_params, tmp_path):
    path = tmp_path / "conv2.png"
    fig = filters.conv_filters(gray_params, "conv2", path=str(path))
    images = _images(fig)
    assert len(images) == 16
    tiles = filters.filter_tiles(np.asarray(gray_params["conv2"]["kernel"]))
    assert tiles.shape == (16, 8 * 6 - 1, 5)
    assert np.nanmin(tiles) == 0.0 and np.nanmax(tiles) == 1.0
    assert np.isnan(tiles[:, 5, :]).all()  # Separator row between channel slices.
    np.testing.assert_allclose(np.ma.filled(images[3].get_array(), np.nan), tiles[3])
    check_png(path)


def test_weight_histograms(gray_params, tmp_path):
    path = tmp_path / "hist.png"
    fig = filters.weight_histograms(gray_params, "conv2/kernel", path=str(path))
    assert len(fig.axes) == 2
    raw, norm = fig.axes
    assert sum(p.get_height() for p in raw.patches) == 5 * 5 * 8 * 16
    assert sum(p.get_height() for p in norm.patches) == 5 * 5 * 8 * 16
    assert norm.get_xlim()[0] >= -0.1 and norm.get_xlim()[1] <= 1.1
    check_png(path)


def test_unknown_layer_says_what_exists(gray_params):
    with pytest.raises(UserError, match="conv1"):
        filters.conv_filters(gray_params, "conv_1")
    with pytest.raises(UserError, match="no 4-D"):
        filters.conv_filters({"fc": {"kernel": np.zeros((3, 2))}})
