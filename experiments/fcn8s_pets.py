"""FCN-8s on Oxford-IIIT Pets trimaps (TFDS oxford_iiit_pet): pet, background, border."""

from experiments import base


def get_config():
    c = base.get_base_config()
    c.task = "segmentation"
    c.model.name = "fcn8s"  # or fcn16s / fcn32s.
    c.model.backbone = "resnet18"  # ImageNet stem; "vgg16" is the paper's, "small" for a CPU.
    c.data.name = "oxford_iiit_pet"
    c.data.image_size = 160  # Pets images vary in size; masks are resized by nearest neighbour.
    c.data.masks = True  # Read the trimaps (tfds_source.SEGMENTATION_MASKS) as "mask".
    c.augment.flip = True
    c.batch_size = 32
    c.num_epochs = 30.0
    c.optim.name = "adamw"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 1e-4
    c.schedule.name = "cosine"
    c.schedule.warmup_epochs = 1.0
    c.log_every_steps = 20
    c.best_metric = "mean_iou"
    return c.lock()
