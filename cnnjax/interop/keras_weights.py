"""Reading Keras weights into plain NumPy, from a live Keras model, a `.keras` file or an `.h5`.

The result is an ordered list of `KerasLayer(name, class_name, weights)` with weights keyed by
their Keras names (`kernel`, `bias`, `gamma`, `beta`, `moving_mean`, `moving_variance`,
`depthwise_kernel`, `pointwise_kernel`). Weights-only `.h5` files (the files Keras applications
download) are read with h5py alone: no Keras, no TensorFlow.
"""

import dataclasses
import os
import re

import numpy as np

from cnnjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class KerasLayer:
    name: str
    class_name: str  # "" when read from a weights-only .h5 (the file does not say).
    weights: dict[str, np.ndarray]


def _short(weight_name: str) -> str:
    """'block1_conv1/kernel:0' or 'sequential/block1_conv1/kernel' -> 'kernel'."""
    return re.sub(r":\d+$", "", weight_name).split("/")[-1]


def from_keras_model(model) -> list[KerasLayer]:
    """Every layer of a Keras model that owns weights, in the model's layer order."""
    layers = []
    for layer in model.layers:
        if not layer.weights:
            continue
        weights = {
            _short(w.path if hasattr(w, "path") else w.name): np.asarray(w) for w in layer.weights
        }
        layers.append(KerasLayer(layer.name, type(layer).__name__, weights))
    return layers


def _from_h5_weights(path: str) -> list[KerasLayer]:
    import h5py

    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise UserError(f"{path} is not a Keras HDF5 weights file (no 'layer_names').")
        layers = []
        for raw in root.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            group = root[name]
            names = [
                n.decode() if isinstance(n, bytes) else str(n)
                for n in group.attrs.get("weight_names", [])
            ]
            if names:
                layers.append(
                    KerasLayer(name, "", {_short(n): np.asarray(group[n]) for n in names})
                )
        return layers


def read_layers(source) -> list[KerasLayer]:
    """Layers with weights from a Keras model object, or a `.keras` / `.h5` path."""
    if not isinstance(source, str | os.PathLike):
        return from_keras_model(source)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise UserError(f"Keras weights file {path!r} does not exist.")
    if path.endswith(".h5") or path.endswith(".hdf5"):
        return _from_h5_weights(path)
    if path.endswith(".keras"):
        try:
            import keras
        except ImportError as e:
            raise UserError(f"Reading {path} needs Keras 3: pip install 'cnnjax[keras]'.") from e
        return from_keras_model(keras.saving.load_model(path, compile=False))
    raise UserError(f"{path}: expected a .keras or .h5 file.")
