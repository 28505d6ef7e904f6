"""Plum: distributed task orchestration and scheduling."""

__version__ = "0.1.0"
