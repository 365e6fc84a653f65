"""Single-shot grid detector on embedded shapes, up to 4 per image: mAP@0.5 with NMS."""

from experiments import base


def get_config():
    c = base.get_base_config()
    c.task = "detection"
    c.model.name = "grid_detector"  # Stride-8 grid: 8x8 cells at 64 px, 98,200 parameters.
    c.data.name = "shapes"
    c.data.image_size = 64
    c.data.max_objects = 4  # 1 to 4 shapes per image (2.5 on average), padded to 4.
    c.data.num_train = 4000  # Generated scenes per split (shapes' defaults).
    c.data.num_test = 1000
    c.augment.flip = True  # Boxes flip with the image.
    c.batch_size = 64
    c.eval_batch_size = 250
    c.num_epochs = 5.0
    c.optim.name = "adam"
    c.optim.lr = 3e-3
    c.schedule.name = "cosine"
    c.schedule.warmup_epochs = 1.0
    c.log_every_steps = 20
    c.eval_every_steps = -1
    c.checkpoint_every_steps = -1
    c.best_metric = "map50"
    return c.lock()
