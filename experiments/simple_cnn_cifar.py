"""A small CNN (two conv 64 + pool, dense 128) on TFDS cifar10: the first CIFAR model."""

from experiments import base


def get_config():
    c = base.get_base_config()
    c.model.name = "cifar_2conv_pool_dense128"
    c.data.name = "cifar10"
    c.batch_size = 128
    c.num_epochs = 20.0
    c.augment.flip = True
    c.optim.name = "adam"
    c.optim.lr = 1e-3
    c.schedule.name = "cosine"
    c.log_every_steps = 100
    return c.lock()
