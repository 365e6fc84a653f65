"""Model names -> constructors. A plain dict built from imports; no lookups by attribute name."""

from collections.abc import Callable

import flax.linen as nn

from cnnjax.errors import UserError, did_you_mean
from cnnjax.models import lenet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": lenet.LeNet5,
}


def list_models() -> list[str]:
    """All registered model names, sorted."""
    return sorted(MODELS)


def get_model(name: str, *, num_classes: int | None, **kwargs) -> nn.Module:
    """Builds the registered model `name`; unknown names raise `UserError` with suggestions."""
    if name not in MODELS:
        raise UserError(
            f"Unknown model {name!r}.{did_you_mean(name, MODELS)} "
            f"Run `python -c 'import cnnjax.models as m; print(m.list_models())'` "
            "for the full list."
        )
    try:
        return MODELS[name](num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise UserError(
            f"Model {name!r} does not take these arguments {sorted(kwargs)}: {e}"
        ) from e
