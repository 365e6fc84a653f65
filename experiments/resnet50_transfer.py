"""ResNet-50 transfer to tf_flowers: xception_transfer's two phases with a ResNet-50 base

Keras' ResNet50 layout (v1: stride on the first 1x1 conv, BatchNorm epsilon 1.001e-5), so Keras
ImageNet weights apply unchanged: --config.init.keras_weights=FILE.h5 (keras.applications saves
resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 under ~/.keras/models/). Inputs are
"caffe"-preprocessed as those weights expect: the ImageNet mean pixel subtracted, no scaling
(Keras' BGR order is handled by reversing the first conv's input channels on import). Phase 1
(5 epochs) trains the head alone, phase 2 (40 epochs) everything with SGD nesterov at lr 0.01.
Offline try (no weights: the dataset's statistics, since caffe inputs suit only pretrained
weights): --config.data.name=shapes --config.data.image_size=64 --config.data.normalization=dataset
"""

import ml_collections

from experiments import xception_transfer


def get_config():
    c = xception_transfer.get_config().unlock()
    # zero_init_residual only matters for a fresh start (loaded weights replace those BatchNorm
    # scales): blocks then start as identities, so frozen random blocks do not blow up the
    # features (a fresh ResNet-50 with frozen BatchNorm otherwise diverges).
    c.model = ml_collections.ConfigDict(
        {
            "name": "resnet50",
            "stride_on_3x3": False,
            "bn_epsilon": 1.001e-5,
            "zero_init_residual": True,
        }
    )
    c.data.normalization = "caffe"
    c.transfer.freeze_pattern = r"^(?!head/)"  # Everything but the head.
    return c.lock()
