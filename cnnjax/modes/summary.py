"""`--mode=summary`: the model's layer table, parameters, FLOPs and memory, and the data it
would train on. Needs no prepared dataset: a TFDS set that is not here is described from its
TFDS feature description."""

from cnnjax import data as data_lib
from cnnjax import tasks
from cnnjax.errors import UserError
from cnnjax.summary import format_summary, summarize
from cnnjax.train import experiment


def run(config, args) -> int:
    del args
    try:
        exp, described = experiment.build(config), False
    except UserError as unavailable:  # Not prepared here: the shapes still tell the model.
        try:
            keys = tasks.task_class(config).target_keys
            stand_in = data_lib.describe(config.data, keys, config.batch_size)
            exp, described = experiment.build(config, stand_in), True
        except Exception:  # noqa: BLE001 - no description either: the first error says why.
            raise unavailable from None
    print(format_summary(summarize(exp.model, exp.data.image_shape)))
    d = exp.data
    if described:
        print(
            f"data: {d.name}, images of {d.image_shape}, {d.num_classes} classes (shapes "
            "from the TFDS description; the dataset is not prepared here, so training "
            "would first need it)"
        )
    else:
        print(
            f"data: {d.name}, {d.num_train:,} train / {d.num_test:,} test images of "
            f"{d.image_shape}, {d.num_classes} classes; {exp.total_steps:,} training steps "
            f"of {config.batch_size}"
        )
    return 0
