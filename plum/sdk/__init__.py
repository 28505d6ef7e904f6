"""Plum from Python: `Client` for the REST API, `Worker` to serve tasks over gRPC."""

from plum.sdk.client import Client, PlumApiError
from plum.sdk.worker import Backoff, TaskContext, Worker

__all__ = ["Backoff", "Client", "PlumApiError", "TaskContext", "Worker"]
