"""Saved detectors: the checkpoint files, their schema, the Hugging Face Hub."""
