"""Test helpers: Kafka topics and I/O, the brute-force figure oracle, the dataset."""
