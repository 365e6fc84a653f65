"""Classic kernels applied to a sample image (cnnjax.viz.kernels_demo)."""

import numpy as np
from viz_testing import check_png, digit_images

from cnnjax.ops.kernels import CLASSIC
from cnnjax.viz import kernels_demo


def _panels(fig):
    return [ax for ax in fig.axes if ax.images]


def test_one_panel_per_kernel(tmp_path):
    images, _ = digit_images(1)
    path = tmp_path / "kernels.png"
    fig = kernels_demo.classic_kernels(images[0], path=str(path), title="digit")
    panels = _panels(fig)
    assert len(panels) == 1 + len(CLASSIC) + 1  # Original, every kernel, Sobel magnitude.
    names = [ax.get_title(loc="left") for ax in panels]
    assert names == ["original (grey)", *CLASSIC, "sobel_magnitude"]
    for ax in panels:
        data = np.asarray(ax.images[0].get_array())
        assert data.shape == (32, 32) and np.isfinite(data).all()
    assert panels[3].get_title(loc="right") == " 0 -1  0\n-1  5 -1\n 0 -1  0"  # sharpen
    for ax in panels:
        name = ax.get_title(loc="left")
        if name in CLASSIC and abs(CLASSIC[name].sum()) < 1e-6:  # Edge maps: centred at 0.
            im = ax.images[0]
            assert im.get_cmap().name == "RdBu_r"
            lo, hi = im.get_clim()
            assert lo == -hi and hi > 0
    assert len(fig.axes) == 2 * len(panels)  # Every panel has its colour bar.
    check_png(path)


def test_rgb_image_is_converted_to_grey():
    rgb = np.zeros((12, 12, 3), np.uint8)
    rgb[:, :6] = (255, 255, 255)  # Bright left half: a vertical edge in the middle.
    grey = kernels_demo.grayscale(rgb)
    assert grey.shape == (12, 12)
    np.testing.assert_allclose(grey[:, :6], 1.0, rtol=1e-6)
    responses = kernels_demo.filter_responses(rgb)
    # Prewitt vertical edges: left column minus right column, positive on a bright-left edge.
    assert responses["vertical_edges"][6, 5] == 3.0 and responses["vertical_edges"][6, 6] == 3.0
    assert responses["sobel_x"][6, 5] == -4.0  # Sobel x: right minus left.
    np.testing.assert_allclose(responses["box_blur"][6, 2], 1.0, rtol=1e-6)
