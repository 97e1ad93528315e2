"""Synthetic event streams for the ``demo`` command and for load generation."""
