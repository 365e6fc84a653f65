"""Xception transfer to tf_flowers (course recipe): head only at lr 0.2, then all, nesterov 0.01

Xception base, global average pooling and a new dense head ("predictions"). Phase 1 (5 epochs)
trains the head alone with the backbone frozen (its BatchNorm layers on their running
statistics); phase 2 (40 epochs) trains everything with SGD nesterov at lr 0.01 and a fresh
optimizer state. Inputs are scaled to [-1, 1] as Keras' Xception weights expect.

Start from Keras' ImageNet weights with --config.init.keras_weights=FILE.h5 (keras.applications
saves xception_weights_tf_dim_ordering_tf_kernels_notop.h5 under ~/.keras/models/). Without a
file the run starts from a fresh initialization and says so. Offline try on the embedded
shapes: --config.data.name=shapes --config.data.image_size=71
"""

import ml_collections

from experiments import base


def get_config():
    c = base.get_base_config()
    c.model = ml_collections.ConfigDict({"name": "xception"})
    c.data.name = "tf_flowers"
    # tf_flowers has only a "train" split (3,670 images): 90% to train on, 10% to test.
    c.data.train_split = "train[:90%]"
    c.data.test_split = "train[90%:]"
    c.data.image_size = 224
    c.data.normalization = "inception"
    c.augment.flip = True
    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_epochs = 45.0  # 5 frozen + 40 fine-tuning.
    c.optim.name = "sgd"
    c.optim.lr = 0.2
    c.optim.momentum = 0.9
    c.schedule.name = "cosine"  # Per phase, from its peak lr down to 0.
    c.init.keras_weights = ""
    c.transfer.freeze_pattern = r"^(?!predictions/)"  # Everything but the head.
    c.transfer.freeze_epochs = 5.0
    c.transfer.finetune_lr = 0.01
    c.transfer.finetune_optim = ml_collections.ConfigDict({"nesterov": True})
    c.log_every_steps = 20
    c.eval_every_steps = -1
    c.checkpoint_every_steps = -1
    return c.lock()
