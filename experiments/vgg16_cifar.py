"""VGG-16 with BatchNorm and a CIFAR head on TFDS cifar10 (SGD momentum, cosine, wd 5e-4)."""

import ml_collections

from experiments import base


def get_config():
    c = base.get_base_config()
    c.model = ml_collections.ConfigDict({"name": "vgg16_bn", "head": "cifar"})
    c.data.name = "cifar10"
    c.batch_size = 128
    c.num_epochs = 60.0
    c.augment.crop_padding = 4
    c.augment.flip = True
    c.optim.name = "sgd"
    c.optim.lr = 0.05
    c.optim.momentum = 0.9
    c.optim.weight_decay = 5e-4
    c.schedule.name = "cosine"
    c.schedule.warmup_epochs = 1.0
    c.log_every_steps = 100
    return c.lock()
