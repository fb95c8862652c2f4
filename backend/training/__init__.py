"""Training: the shared engine (accelerate), losses, metrics and the LaLRM trainer."""
