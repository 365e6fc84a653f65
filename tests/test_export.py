"""--mode=export: StableHLO and ONNX files that agree with the Flax model and run without cnnjax.

The ONNX tests need the `[export]` extra (jax2onnx, onnxruntime); CI installs it. Without it
they skip and say so."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from launching import ROOT, launch
from PIL import Image

from cnnjax.data import digits
from cnnjax.interop import export as E
from cnnjax.models import registry

HAS_ONNX = not E.missing_packages()
needs_onnx = pytest.mark.skipif(
    not HAS_ONNX,
    reason=f"ONNX export needs {', '.join(E.missing_packages())}: pip install -e '.[export]'",
)
# A process that cannot import cnnjax or Flax: what the exported files must run in.
NO_CNNJAX = "import sys; sys.modules['cnnjax'] = None; sys.modules['flax'] = None\n"


def _trained_like(name, shape, **kwargs):
    """A model with variables that are not the initialization: every BatchNorm statistic
    moved, so inference mode (running statistics) differs from batch statistics."""
    model = registry.get_model(name, num_classes=10, **kwargs)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)), train=False)
    rng = np.random.default_rng(1)
    stats = jax.tree.map(
        lambda a: np.abs(a + 0.2 * rng.standard_normal(a.shape)).astype(np.float32),
        variables.get("batch_stats", {}),
    )
    if stats:
        variables = {**variables, "batch_stats": stats}
    mean, std = np.full(shape[-1], 0.4, np.float32), np.full(shape[-1], 0.25, np.float32)
    return model, variables, mean, std


PARITY = [
    ("lenet5", (32, 32, 1), {}),
    ("resnet18", (32, 32, 3), {"stem": "cifar"}),
    ("separable_vgg_blocks", (32, 32, 3), {}),  # Depthwise-separable convolutions.
]


@pytest.mark.parametrize("name,shape,kwargs", PARITY, ids=[p[0] for p in PARITY])
def test_exported_files_agree_with_flax(name, shape, kwargs):
    model, variables, mean, std = _trained_like(name, shape, **kwargs)
    fn = E.inference_function(model, variables, mean, std)
    images = np.random.default_rng(2).uniform(0, 255, (5, *shape)).astype(np.float32)
    # The Flax model itself, in inference mode, on the same normalization.
    logits = model.apply(variables, (images / 255 - mean) / std, train=False)
    if variables.get("batch_stats"):
        train_logits, _ = model.apply(
            variables, (images / 255 - mean) / std, train=True, mutable=["batch_stats"]
        )
        assert np.abs(np.asarray(train_logits) - np.asarray(logits)).max() > 1e-2

    exported = jax.export.deserialize(bytearray(E.to_stablehlo(fn, shape)))
    assert str(exported.in_avals[0].shape[0]) == E.BATCH
    for batch in (5, 1):  # Any batch size, from one file.
        got_logits, got_probs = exported.call(images[:batch])
        np.testing.assert_allclose(got_logits, logits[:batch], atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_probs, jax.nn.softmax(logits[:batch]), atol=1e-4, rtol=0)

    if HAS_ONNX:
        blob = E.to_onnx(fn, shape, ["logits", "probabilities"])
        for batch in (5, 2):
            onnx_logits, onnx_probs = E.run_onnx(blob, images[:batch])
            np.testing.assert_allclose(onnx_logits, logits[:batch], atol=1e-4, rtol=0)
            np.testing.assert_allclose(
                onnx_probs, jax.nn.softmax(logits[:batch]), atol=1e-4, rtol=0
            )


@needs_onnx
def test_an_op_onnxruntime_refuses_is_named():
    import flax.linen as nn

    class Pooled(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
            return nn.Dense(3)(x.reshape((x.shape[0], -1)))

    model = Pooled()
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 9, 9, 2)))
    fn = E.inference_function(model, variables, np.zeros(2), np.ones(2))
    with pytest.raises(E.ExportError) as info:
        E.to_onnx(fn, (9, 9, 2), ["logits", "probabilities"])
    assert info.value.op == "MaxPool" and "'MaxPool'" in str(info.value)
    # StableHLO expresses it.
    blob = E.to_stablehlo(fn, (9, 9, 2))
    out = jax.export.deserialize(bytearray(blob)).call(np.ones((2, 9, 9, 2), np.float32))
    np.testing.assert_allclose(out[0], fn(jnp.ones((2, 9, 9, 2)))[0], atol=1e-5)


def _one_line_error(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_export_without_a_checkpoint_is_exit_2(tmp_path):
    proc = launch(["--experiment=quickstart", f"--workdir={tmp_path}", "--mode=export"])
    line = _one_line_error(proc)
    assert "No readable checkpoint" in line and "train first" in line
    assert not os.path.exists(tmp_path / "export")
    proc = launch(["--experiment=quickstart", "--mode=export"])
    assert "--workdir" in _one_line_error(proc)
    proc = launch(
        [
            "--experiment=quickstart",
            f"--workdir={tmp_path}",
            "--mode=export",
            "--config.export.formats=tflite",
        ]  # fmt: skip
    )
    assert "stablehlo, onnx" in _one_line_error(proc)


def _snippet(title: str) -> str:
    """The first python block after `title` in docs/export.md."""
    text = open(os.path.join(ROOT, "docs", "export.md"), encoding="utf-8").read()
    return re.search(r"```python\n(.*?)```", text.split(title, 1)[1], re.S).group(1)


@needs_onnx
def test_train_export_predict_without_cnnjax(quickstart_20_steps, tmp_path):
    out = tmp_path / "export"
    proc = launch(
        [
            "--experiment=quickstart",
            f"--workdir={quickstart_20_steps}",
            "--mode=export",
            f"--config.export.dir={out}",
        ]  # fmt: skip
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "model.onnx" in proc.stdout and "model.stablehlo" in proc.stdout
    info = json.loads((out / "model.json").read_text())
    assert info["input"] == {
        "name": "images", "shape": ["batch", 32, 32, 1], "layout": "NHWC", "dtype": "float32"
    }  # fmt: skip
    assert info["class_names"] == [str(i) for i in range(10)]
    assert info["preprocessing"]["short_side"] == 32 and len(info["preprocessing"]["mean"]) == 1
    assert info["checkpoint_step"] == 20 and info["outputs"] == ["logits", "probabilities"]
    assert max(info["check"]["max_abs_difference_vs_flax"].values()) <= 1e-4
    assert not os.path.exists(quickstart_20_steps / "export")  # It wrote only where asked.

    # Real test digits as 64x64 PNGs: the documented snippet (onnxruntime, no cnnjax) predicts
    # what --mode=predict predicts with the checkpoint.
    data = digits.load()
    paths = []
    for i in range(4):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(np.kron(data["test_images"][i, ..., 0], np.ones((2, 2), np.uint8))).save(
            path
        )
        paths.append(str(path))
    script = tmp_path / "predict_onnx.py"
    script.write_text(NO_CNNJAX + _snippet("## Predict with the ONNX file"))
    predicted = launch(
        [
            "--experiment=quickstart",
            f"--workdir={quickstart_20_steps}",
            "--mode=predict",
            f"--images={','.join(paths)}",
        ]  # fmt: skip
    )
    assert predicted.returncode == 0, predicted.stderr
    tops = re.findall(r"^\s+1\. (\S+)\s+([\d.]+)%", predicted.stdout, re.M)
    assert len(tops) == 4
    for path, (name, percent) in zip(paths, tops, strict=True):
        proc = subprocess.run(
            [sys.executable, str(script), str(out), path], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        got_name, got_percent = proc.stdout.split()
        assert got_name == name
        assert abs(float(got_percent.rstrip("%")) - float(percent)) < 0.02

    # The StableHLO file from plain JAX, any batch size, no cnnjax or Flax in the process.
    code = NO_CNNJAX + _snippet("## The StableHLO file from plain JAX").replace(
        "runs/qs/export", str(out)
    )
    code += "print(logits.shape, probabilities.shape)\n"
    code += "print(exported.call(np.zeros((3, 32, 32, 1), np.float32))[0].shape)\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["(8, 10) (8, 10)", "(3, 10)"]


def test_a_missing_package_of_a_format_is_one_line_naming_pip(quickstart_20_steps, tmp_path):
    # jax.export serializes with flatbuffers, which jax does not require: the plain install
    # must bring it (issue 25: a plain install failed with "Please install 'flatbuffers'").
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        core = tomllib.load(f)["project"]["dependencies"]
    assert any(re.match(r"flatbuffers\b", d) for d in core), core
    # A Python where `import flatbuffers` fails, as on an install without it.
    shim = tmp_path / "no_flatbuffers"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['flatbuffers'] = None\n")
    path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    out = tmp_path / "export"
    args = ["--experiment=quickstart", f"--workdir={quickstart_20_steps}", "--mode=export"]
    proc = launch(
        [*args, "--config.export.formats=stablehlo", f"--config.export.dir={out}"],
        env={"PYTHONPATH": path},
    )
    line = _one_line_error(proc)
    assert "StableHLO export needs flatbuffers" in line and "pip install flatbuffers" in line
    assert not out.exists()


@needs_onnx
def test_a_stablehlo_only_export_removes_the_previous_onnx_file(quickstart_20_steps, tmp_path):
    out = tmp_path / "export"
    args = ["--experiment=quickstart", f"--workdir={quickstart_20_steps}", "--mode=export"]
    both = launch([*args, f"--config.export.dir={out}", "--config.export.checkpoint=latest"])
    assert both.returncode == 0, both.stdout + both.stderr
    assert (out / "model.onnx").exists()
    again = launch([*args, f"--config.export.dir={out}", "--config.export.formats=stablehlo"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "removed model.onnx" in again.stdout
    # The folder holds one export, and model.json names all of it.
    assert sorted(os.listdir(out)) == ["model.json", "model.stablehlo"]
    info = json.loads((out / "model.json").read_text())
    assert info["files"] == {"stablehlo": "model.stablehlo"}
