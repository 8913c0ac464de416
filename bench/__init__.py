"""Benchmarks: each runs as `uv run python -m bench.NAME`, prints a table, then one JSON line."""
