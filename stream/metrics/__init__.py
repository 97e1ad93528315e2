"""Prometheus and HTTP adapter: the figures collector, the worker's health metrics, and
the `/metrics`, `/healthz` and `/readyz` endpoints."""
