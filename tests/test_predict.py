"""--mode=predict: image files -> top-5 class names, with a run's checkpoint or Keras weights."""

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from cnnjax import runs  # noqa: E402
from cnnjax.data import digits, pipeline, transforms  # noqa: E402
from cnnjax.errors import UserError  # noqa: E402
from cnnjax.modes import predict as P  # noqa: E402
from cnnjax.overrides import apply_overrides  # noqa: E402
from cnnjax.train import loop  # noqa: E402
from experiments import quickstart  # noqa: E402

TINY = [
    ("num_train_steps", "20"),
    ("batch_size", "32"),
    ("log_every_steps", "10"),
    ("eval_every_steps", "20"),
    ("checkpoint_every_steps", "20"),
]


def tiny_config():
    return apply_overrides(quickstart.get_config(), TINY)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config()
    loop.train_and_evaluate(config, workdir)
    return config, workdir


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """Three real test digits as 64x64 grayscale PNGs, a missing file and a non-image."""
    folder = tmp_path_factory.mktemp("images")
    data = digits.load()
    paths, labels = [], []
    for i in (0, 1, 2):
        image = np.kron(data["test_images"][i, ..., 0], np.ones((8, 8), np.uint8))
        path = str(folder / f"digit{i}.png")
        Image.fromarray(image, mode="L").save(path)
        paths.append(path)
        labels.append(int(data["test_labels"][i]))
    missing = str(folder / "missing.png")
    not_image = folder / "notes.png"
    not_image.write_text("not a picture\n")
    return paths, labels, missing, str(not_image)


def test_imagenet_class_names():
    names = P.imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert (names[0], names[1], names[999]) == ("tench", "goldfish", "toilet tissue")


def test_class_names_for_falls_back_to_imagenet_for_1000_classes():
    synsets = tuple(f"n{i:08d}" for i in range(1000))
    assert P.class_names_for(synsets, 1000)[0] == "tench"
    assert P.class_names_for(("a", "b"), 1000)[0] == "tench"
    assert P.class_names_for(tuple("0123456789"), 10) == tuple("0123456789")
    assert P.class_names_for((), 3) == ("class 0", "class 1", "class 2")


def test_load_images_resize_and_crop_rules(tmp_path):
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)
    square = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(square).save(tmp_path / "square.png")
    paths = [str(tmp_path / "wide.png"), str(tmp_path / "square.png")]

    images, ok, errors = P.load_images(paths, 32, 3)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert ok == paths and errors == []
    # Small-image models: a square picture gets exactly the plain resize, a wide one keeps
    # its aspect ratio (short side to 32, central square).
    np.testing.assert_array_equal(images[1], transforms._resize(square, 32, 32))
    np.testing.assert_array_equal(images[0], transforms._resize(wide, 32, 64)[:, 16:48])
    # ImageNet-recipe models: short side to 32 / 0.875, central crop.
    cropped, _, _ = P.load_images(paths, 32, 3, crop_fraction=0.875)
    np.testing.assert_array_equal(cropped[1], transforms.center_crop(square, 32, 0.875))
    gray, _, _ = P.load_images(paths[1:], 32, 1)
    assert gray.shape == (1, 32, 32, 1)


def test_predict_run_names_errors_and_matches_model_apply(trained, digit_files):
    config, workdir = trained
    paths, _, missing, not_image = digit_files
    all_paths = [paths[0], missing, paths[1], not_image, paths[2]]

    results = P.predict_run(config, workdir, all_paths)
    assert [r["path"] for r in results] == all_paths
    good = [r for r in results if "top" in r]
    bad = [r for r in results if "error" in r]
    assert len(good) == 3 and len(bad) == 2
    assert bad[0]["error"] == f"error: cannot read {missing}: no such file"
    assert bad[1]["error"].startswith(f"error: cannot read {not_image}: ")
    assert "\n" not in bad[1]["error"]
    for r in good:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1 + 1e-6
        names = [t["name"] for t in r["top"]]
        assert len(set(names)) == 5 and all(n in tuple("0123456789") for n in names)
        assert all(t["name"] == str(t["index"]) for t in r["top"])

    # Deterministic, and the same numbers as applying the model to the same pixels.
    assert P.predict_run(config, workdir, all_paths) == results
    exp, state, step = runs.restore_best(config, workdir)
    assert step == 20
    images, ok, errors = P.load_images(paths, 32, 1)
    assert ok == paths and errors == []
    x = pipeline.normalize(images, exp.data.mean, exp.data.std)
    probs = np.asarray(jax.nn.softmax(exp.model.apply(state.variables, x, train=False)))
    for row, r in zip(probs, good, strict=True):
        order = np.argsort(-row)[:5]
        assert [t["index"] for t in r["top"]] == order.tolist()
        np.testing.assert_allclose([t["prob"] for t in r["top"]], row[order], atol=1e-6)

    text = P.format_predictions(results)
    lines = text.splitlines()
    assert lines[0] == f"{paths[0]}:" and lines[6] == bad[0]["error"]
    assert all(line.startswith("  ") and line.endswith("%") for line in lines[1:6])
    assert len({len(line) for line in lines[1:6]}) == 1  # Aligned columns.


def test_predict_run_without_checkpoint_says_train_first(tmp_path, digit_files):
    with pytest.raises(UserError, match="train first"):
        P.predict_run(tiny_config(), str(tmp_path), digit_files[0][:1])


def test_predict_run_without_checkpoint_uses_init_keras_weights(tmp_path, digit_files):
    missing = str(tmp_path / "nowhere.h5")
    config = apply_overrides(tiny_config(), [("init.keras_weights", missing)])
    with pytest.raises(UserError, match="does not exist"):
        P.predict_run(config, str(tmp_path), digit_files[0][:1])


def test_format_predictions_aligns_names_and_percentages():
    results = [
        {
            "path": "cat.jpg",
            "top": [
                {"index": 281, "name": "tabby", "prob": 0.8731},
                {"index": 282, "name": "tiger cat", "prob": 0.0902},
                {"index": 285, "name": "Egyptian cat", "prob": 0.01},
            ],
        },
        {"path": "x.jpg", "error": "error: cannot read x.jpg: no such file"},
    ]
    assert P.format_predictions(results) == (
        "cat.jpg:\n"
        "  1. tabby          87.31%\n"
        "  2. tiger cat       9.02%\n"
        "  3. Egyptian cat    1.00%\n"
        "error: cannot read x.jpg: no such file"
    )


def test_predict_keras_matches_keras(tmp_path):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("needs KERAS_BACKEND=jax")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="keras")
    from cnnjax.interop.keras import preprocess

    kmodel = keras.applications.MobileNet(weights=None, input_shape=(224, 224, 3))
    rng = np.random.default_rng(0)
    for layer in kmodel.layers:  # Non-trivial statistics: a peaked, meaningful softmax.
        for w in layer.weights:
            name = w.path.split("/")[-1]
            if name in ("moving_mean", "beta", "bias"):
                w.assign(rng.normal(0, 0.1, w.shape).astype("float32"))
            elif name in ("moving_variance", "gamma"):
                w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    head = kmodel.get_layer("conv_preds").kernel
    head.assign(np.asarray(head) * 100)  # Image-dependent logits far apart.
    weights = str(tmp_path / "mobilenet.keras")
    kmodel.save(weights)
    picture = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    image_path = str(tmp_path / "picture.png")
    Image.fromarray(picture).save(image_path)

    (result,) = P.predict_keras(weights, [image_path])
    names = P.imagenet_class_names()
    assert [t["name"] for t in result["top"]] == [names[t["index"]] for t in result["top"]]
    assert len(result["top"]) == 5

    x = transforms.center_crop(picture, 224, 0.875)[None].astype(np.float32)
    ref = np.asarray(kmodel(preprocess(x, "mobilenet_v1"), training=False))[0]
    got = np.array([t["prob"] for t in result["top"]])
    assert got[0] > 0.1  # Far from uniform: the comparison means something.
    np.testing.assert_allclose(got, ref[[t["index"] for t in result["top"]]], atol=1e-4)
    np.testing.assert_allclose(got, np.sort(ref)[::-1][:5], atol=1e-4)
