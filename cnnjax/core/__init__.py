"""Pure math below every other package: losses and (sum, count) metrics on arrays.

Nothing here knows a config, a dataset or a model; tasks (`cnnjax.tasks`) and the trainer
(`cnnjax.train`) both build on it.
"""
