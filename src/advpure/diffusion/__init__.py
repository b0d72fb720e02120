"""Diffusion math (schedules, no weights) and noise-prediction backbones (weights, no math)."""
