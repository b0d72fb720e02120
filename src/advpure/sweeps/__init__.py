"""Multirun sweeps: collect every job's results into one table and chart."""
