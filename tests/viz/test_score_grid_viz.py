"""The convolutionalized classifier's score grid over a larger image (cnnjax.viz.score_grid)."""

import jax
import numpy as np
from viz_testing import check_png, digit_images, lenet

from cnnjax.viz import score_grid


def test_tile_canvas_is_row_major():
    images = np.arange(4 * 2 * 2 * 1, dtype=np.uint8).reshape(4, 2, 2, 1)
    canvas = score_grid.tile_canvas(images, 2, 2)
    assert canvas.shape == (4, 4, 1)
    np.testing.assert_array_equal(canvas[:2, 2:], images[1])
    np.testing.assert_array_equal(canvas[2:, :2], images[2])


def test_grid_cells_are_the_classifier_on_windows_and_the_picture_is_written(tmp_path):
    model, variables = lenet(1)
    images, _ = digit_images(4)
    canvas = score_grid.tile_canvas(images, 2, 2)  # 64x64: lenet5 (stride 4) gives 9x9.
    probs, stride = score_grid.score_grid(model, variables, canvas, [0.5], [0.25], (32, 32, 1))
    assert probs.shape == (9, 9, 10) and stride == 4
    x = (canvas[None].astype(np.float32) / 255.0 - 0.5) / 0.25
    # The window at cell (2, 5) is the dense model on the crop at pixel (8, 20).
    crop = x[:, 8:40, 20:52]
    dense = jax.nn.softmax(model.apply(variables, crop, train=False), axis=-1)[0]
    np.testing.assert_allclose(probs[2, 5], dense, atol=1e-5)
    path = tmp_path / "score_grid.png"
    score_grid.score_grid_figure(
        canvas, probs, [str(i) for i in range(10)], window=(32, 32), stride=stride,
        path=str(path),
    )  # fmt: skip
    check_png(path)
