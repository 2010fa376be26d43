"""The normalizing flow: the model, its training loop and one optimisation step."""
