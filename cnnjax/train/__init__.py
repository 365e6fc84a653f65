"""Training: state, pure steps, optimizers and schedules, losses, metrics, checkpoints, the loop."""
