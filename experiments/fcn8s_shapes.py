"""FCN-8s semantic segmentation of the embedded shapes (background + 3 classes), CPU-sized."""

from experiments import base


def get_config():
    c = base.get_base_config()
    c.task = "segmentation"
    c.model.name = "fcn8s"  # or fcn16s / fcn32s: the course's comparison of the three.
    c.model.backbone = "small"  # 34k-parameter conv-BN-ReLU-pool backbone (FCN's CPU demo).
    c.data.name = "shapes"
    c.data.image_size = 48
    c.augment.flip = True  # Masks are mirrored with their images.
    c.batch_size = 32
    c.num_epochs = 10.0
    c.optim.name = "adam"
    c.optim.lr = 3e-3
    c.schedule.name = "cosine"
    c.schedule.warmup_epochs = 0.5
    c.log_every_steps = 50
    c.best_metric = "mean_iou"
    return c.lock()
