"""Measuring a detector: metrics, conformal p-values, the headline means, reports."""
