"""Throughput, freshness, scrape and memory benchmark of engagement-stream.

Run it with `python -m benchmarks.run`."""
