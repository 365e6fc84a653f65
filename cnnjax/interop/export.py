"""A trained model as files that run without cnnjax: StableHLO (`jax.export`) and ONNX.

    fn = inference_function(model, variables, mean, std)      # pixels 0..255 -> outputs
    blob = to_stablehlo(fn, (32, 32, 1))                       # bytes, any batch size
    outputs = jax.export.deserialize(blob).call(images)        # plain JAX, no model code
    onnx_bytes = to_onnx(fn, (32, 32, 1), ("logits", "probabilities"))
    outputs = run_onnx(onnx_bytes, images)                     # onnxruntime

Both artifacts take float32 NHWC images of pixel values 0..255, already resized to the model's
input size (how: the sidecar JSON's "preprocessing"), with a symbolic batch dimension. The
normalization the model was trained with, (x / 255 - mean) / std, is inside the graph, so a
user feeds pixels, not statistics. The model runs in inference mode: BatchNorm with its running
statistics, dropout off.

ONNX: the function is traced to a jaxpr of lax primitives first, and jax2onnx converts those
primitives. Handing it the Flax function itself lets jax2onnx swap in its own versions of
`flax.linen` layers, which (jax2onnx 0.17) mixed NHWC and NCHW in residual networks and broke
`nn.max_pool`'s positional window; the primitive route gives the same graph for every model.
What the converter or onnxruntime cannot express is an `ExportError` naming the op.
"""

import os
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.data import pipeline
from cnnjax.errors import first_line

INPUT_NAME = "images"
BATCH = "batch"  # The symbolic batch dimension's name, in both formats.
ONNX_OPSET = 17  # Broadly supported by runtimes (onnxruntime >= 1.11, TensorRT, OpenVINO).


class ExportError(Exception):
    """A model the exporter cannot express; `op` names the operation."""

    def __init__(self, fmt: str, op: str, detail: str):
        self.fmt, self.op, self.detail = fmt, op, detail
        super().__init__(f"{fmt} export cannot express op {op!r}: {detail}")


# The modules each format needs beyond jax, and the pip command that installs them. jax.export
# serializes with flatbuffers, which jax does not require (cnnjax's core install does).
REQUIREMENTS = {
    "stablehlo": (("flatbuffers",), "pip install flatbuffers"),
    "onnx": (("jax2onnx", "onnx", "onnxruntime"), "pip install -e '.[export]'"),
}


def missing_packages(fmt: str = "onnx") -> list[str]:
    """The modules format `fmt` needs that cannot be imported here (`REQUIREMENTS`)."""
    import importlib.util

    return [m for m in REQUIREMENTS[fmt][0] if importlib.util.find_spec(m) is None]


def inference_function(model, variables, mean, std, *, class_scores: bool = True):
    """images float32 (N, H, W, C) in 0..255 -> the model's outputs in inference mode, with the
    training normalization applied first: (logits, softmax probabilities) for a classifier
    (`class_scores`), else the model's output as it is."""

    def fn(images):
        out = model.apply(variables, pipeline.normalize(images, mean, std), train=False)
        if not class_scores:
            return out
        logits = out.astype(jnp.float32)
        return logits, jax.nn.softmax(logits, axis=-1)

    return fn


def input_spec(image_shape) -> jax.ShapeDtypeStruct:
    """float32 (batch, H, W, C) with `batch` a symbolic dimension."""
    (batch,) = jax.export.symbolic_shape(BATCH)
    return jax.ShapeDtypeStruct((batch, *(int(d) for d in image_shape)), jnp.float32)


def to_stablehlo(fn, image_shape, platforms=("cpu", "cuda", "tpu")) -> bytes:
    """`jax.export` of `fn` for any batch size on `platforms`, serialized (the weights are
    constants inside). Reload with `jax.export.deserialize(blob).call(images)`."""
    exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(input_spec(image_shape))
    return bytes(exported.serialize())


def _op_of_failure(error: BaseException) -> str:
    """The jax2onnx plugin (named after the primitive it converts) where `error` was raised."""
    plugin = None
    for frame in traceback.extract_tb(error.__traceback__):
        parts = frame.filename.replace(os.sep, "/").split("/jax2onnx/plugins/")
        if len(parts) == 2 and not parts[1].startswith("_"):
            name = os.path.splitext(parts[1].rsplit("/", 1)[-1])[0]
            if not name.startswith("_"):
                plugin = name
    if plugin:
        return plugin
    text = str(error)
    for prefix in ("primitive '", "primitive: ", "primitive "):
        if prefix in text:
            return text.split(prefix, 1)[1].split("'")[0].split()[0].strip("'\",.:")
    return type(error).__name__


def to_onnx(fn, image_shape, output_names, *, opset: int = ONNX_OPSET) -> bytes:
    """The ONNX model (bytes) of `fn` for any batch size, converted by jax2onnx from `fn`'s
    primitives, then loaded once by onnxruntime to check that it runs. Raises `ExportError`
    naming the op the converter or onnxruntime refuses."""
    from jax2onnx import to_onnx as jax2onnx_to_onnx

    spec = input_spec(image_shape)
    closed = jax.make_jaxpr(fn)(spec)

    def primitives(images):
        return tuple(jax.core.eval_jaxpr(closed.jaxpr, closed.consts, images))

    try:
        proto = jax2onnx_to_onnx(
            primitives,
            inputs=[spec],
            model_name="cnnjax",
            opset=opset,
            input_names=[INPUT_NAME],
            output_names=list(output_names),
        )
    except Exception as e:  # noqa: BLE001 - any converter failure names its op.
        raise ExportError("ONNX", _op_of_failure(e), first_line(e)) from e
    blob = proto.SerializeToString()
    check = np.zeros((1, *spec.shape[1:]), np.float32)
    try:
        run_onnx(blob, check)
    except Exception as e:  # noqa: BLE001 - onnxruntime names the node it cannot run.
        op = next((n.op_type for n in proto.graph.node if n.name in str(e)), "unknown")
        reason = first_line(e).split("Status Message: ")[-1]
        raise ExportError("ONNX", op, f"onnxruntime refuses it: {reason}") from e
    return blob


def run_onnx(model, images) -> list[np.ndarray]:
    """The outputs of an ONNX model (a path or bytes) on float32 images, with onnxruntime."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # Errors only: its shape-merge warnings are noise here.
    session = onnxruntime.InferenceSession(
        model, sess_options=options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {INPUT_NAME: np.asarray(images, np.float32)})


def max_difference(a, b) -> float:
    """The largest absolute difference between two trees of arrays with the same leaves."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in pairs)
