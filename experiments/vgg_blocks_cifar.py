"""VGG-style blocks (64-128-256, two 3x3 convs each) on cifar10; compare separable_vgg_cifar."""

from experiments import base


def get_config():
    c = base.get_base_config()
    c.model.name = "vgg_blocks"
    c.data.name = "cifar10"
    c.batch_size = 128
    c.num_epochs = 30.0
    c.augment.crop_padding = 4
    c.augment.flip = True
    c.optim.name = "adam"
    c.optim.lr = 1e-3
    c.schedule.name = "cosine"
    c.schedule.warmup_epochs = 1.0
    c.log_every_steps = 100
    return c.lock()
