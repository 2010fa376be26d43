"""Plumbing every layer may use: atomic file writes, package versions, torch.distributed."""
