"""Counting parameters: the one definition the training banner, the report and the summary
table share."""

import math

import jax


def count_params(tree) -> int:
    """Number of scalars in a pytree of arrays (or of `jax.ShapeDtypeStruct`s)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
