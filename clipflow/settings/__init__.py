"""Run settings: typed, range-checked dataclasses built from Hydra configs."""
