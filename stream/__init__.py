"""engagement-stream: Kafka product telemetry folded into Redis, exported to Prometheus."""

__version__ = "0.1.0"
