"""Throughput, freshness, scrape and memory benchmark of engagement-stream (`python -m benchmarks.run`)."""
