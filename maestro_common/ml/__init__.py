"""The machine-learning substrate: models, datasets, the training loop and lr schedules."""
