"""Evaluation: the defended model, the Lightning test loop, metrics and result files."""
