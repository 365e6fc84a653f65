"""Tasks beyond classification: the trainer asks the run's task for targets, model, loss and
metrics. `config.task` picks one of `TASKS`; the contract is in `cnnjax.tasks.base`.

- "classification" (default): one label per image.
- "localization": one label and one box per image (class head + sigmoid box head).
- "segmentation": a class per pixel (FCN), confusion-matrix mIoU.
- "detection": several objects per image, single-shot grid detector, NMS, VOC mAP@0.5.
"""

from cnnjax.errors import UserError, did_you_mean
from cnnjax.tasks.base import Task
from cnnjax.tasks.classification import Classification
from cnnjax.tasks.detection import Detection
from cnnjax.tasks.localization import Localization
from cnnjax.tasks.segmentation import Segmentation

TASKS: dict[str, type[Task]] = {
    "classification": Classification,
    "localization": Localization,
    "segmentation": Segmentation,
    "detection": Detection,
}


def task_class(config) -> type[Task]:
    """The class of `config.task` ("classification" when the key is absent)."""
    name = str(config.get("task", "classification"))
    if name not in TASKS:
        raise UserError(
            f"Unknown task {name!r}.{did_you_mean(name, TASKS)} Tasks: {', '.join(TASKS)}."
        )
    return TASKS[name]


def get_task(config, data) -> Task:
    """The task of `config.task` for `data`."""
    return task_class(config)(config, data)


__all__ = ["TASKS", "Task", "get_task", "task_class"]
