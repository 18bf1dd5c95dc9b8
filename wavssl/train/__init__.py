"""Training: one Trainer for every task, schedules, checkpoints and importers."""
