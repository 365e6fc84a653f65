"""Classification + localization on the embedded shapes: a small CNN, class and box heads."""

from experiments import base


def get_config():
    c = base.get_base_config()
    c.task = "localization"
    c.model.name = "small"  # FCN's CPU-sized conv-BN-ReLU-pool backbone; any backbone works.
    c.model.filters = (16, 32, 64)  # 32 px -> a 4x4x64 map, flattened into the head.
    c.data.name = "shapes"
    c.data.image_size = 32
    c.augment.flip = True  # Boxes are mirrored with their images.
    c.batch_size = 64
    c.num_epochs = 12.0
    c.optim.name = "adam"
    c.optim.lr = 3e-3
    c.schedule.name = "cosine"
    c.schedule.warmup_epochs = 1.0
    c.log_every_steps = 50
    c.best_metric = "mean_iou"
    return c.lock()
