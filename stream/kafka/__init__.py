"""Kafka adapter: the `Source` the worker reads through (aiokafka's by default,
confluent-kafka's as an option), the compiled record-batch reading and its codecs, the
TLS check at start, and the offsets-out-of-range probe."""
