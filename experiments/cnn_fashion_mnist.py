"""The Fashion-MNIST CNN (conv 64@7x7, 2x128, 2x256, dense 128/64, dropout) on fashion_mnist."""

from experiments import base


def get_config():
    c = base.get_base_config()
    c.model.name = "fashion_mnist_cnn"
    c.data.name = "fashion_mnist"
    c.batch_size = 128
    c.num_epochs = 10.0
    c.optim.name = "adam"
    c.optim.lr = 1e-3
    c.schedule.name = "cosine"
    c.log_every_steps = 100
    return c.lock()
