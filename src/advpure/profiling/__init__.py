"""Measurements for benchmarks and tests (memory, time)."""
