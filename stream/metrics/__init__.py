"""Prometheus and HTTP adapter: the figures collector (`collector.py`, rendering the
catalogue), the worker's health metrics (`health.py`), and the `/metrics`, `/healthz`
and `/readyz` endpoints (`httpserver.py`)."""
