"""ResNet-50 on ImageNet (TFDS imagenet2012, manual download): 90-epoch Goyal et al., streamed."""

from experiments import base


def get_config():
    c = base.get_base_config()
    c.model.name = "resnet50"
    c.data.name = "imagenet2012"
    c.data.test_split = "validation"
    c.data.image_size = 224
    c.data.feeding = "stream"
    c.augment.inception_crop = True
    c.augment.flip = True
    c.batch_size = 1024
    c.eval_batch_size = 1000
    c.num_epochs = 90.0
    c.optim.name = "sgd"
    c.optim.lr = 0.1 * 1024 / 256  # Linear scaling: 0.1 per 256 images.
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4
    c.schedule.name = "piecewise"
    c.schedule.boundaries = (30 / 90, 60 / 90, 80 / 90)
    c.schedule.decay_factor = 0.1
    c.schedule.warmup_epochs = 5.0
    c.dtype = "auto"
    c.log_every_steps = 100
    c.eval_every_steps = -1
    c.checkpoint_every_steps = 1000
    return c.lock()
