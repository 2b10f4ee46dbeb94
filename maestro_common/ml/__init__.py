"""The machine-learning substrate: models, datasets, lr schedules, the prefix rule, dry passes."""
