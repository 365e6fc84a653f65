"""LeNet-5 on MNIST (TFDS mnist, resized to the 32x32 input of LeCun et al. 1998)."""

from experiments import base


def get_config():
    c = base.get_base_config()
    c.model.name = "lenet5"
    c.data.name = "mnist"
    c.data.image_size = 32
    c.batch_size = 128
    c.num_epochs = 10.0
    c.optim.name = "adam"
    c.optim.lr = 1e-3
    c.schedule.name = "cosine"
    c.log_every_steps = 100
    return c.lock()
