"""Model zoo: `get_model(name, num_classes=...)` returns a flax.linen module."""

from cnnjax.models.convolutionalize import convolutionalize
from cnnjax.models.registry import MODELS, get_model, list_models

__all__ = ["MODELS", "convolutionalize", "get_model", "list_models"]
