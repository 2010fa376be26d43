"""Hydra configs, shipped inside the package as clipflow.configs."""
