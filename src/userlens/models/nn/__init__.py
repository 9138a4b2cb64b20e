"""Torch code: modules (math), losses, the trainer and the sequential model wrappers."""
