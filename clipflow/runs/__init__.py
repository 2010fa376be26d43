"""The jobs behind the CLIs: train, evaluate, robustness, calibrate, check-data."""
