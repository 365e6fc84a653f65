"""The same VGG blocks with depthwise-separable convs on cifar10: fewer parameters, same recipe."""

from experiments import vgg_blocks_cifar


def get_config():
    c = vgg_blocks_cifar.get_config().unlock()
    c.model.name = "separable_vgg_blocks"
    return c.lock()
