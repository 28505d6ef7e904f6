"""Errors to gRPC status: one table walked by class hierarchy (HTTP's is `plum.api.errors`)."""

from __future__ import annotations

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from plum.errors import (
    Conflict,
    Forbidden,
    Invalid,
    InvalidState,
    NotFound,
    PlumError,
    TooLarge,
    Unauthorized,
    Unavailable,
)

GRPC_STATUS: dict[type[PlumError], Status] = {
    Invalid: Status.INVALID_ARGUMENT,
    Unauthorized: Status.UNAUTHENTICATED,
    Forbidden: Status.PERMISSION_DENIED,
    NotFound: Status.NOT_FOUND,
    Conflict: Status.ALREADY_EXISTS,
    InvalidState: Status.FAILED_PRECONDITION,
    TooLarge: Status.RESOURCE_EXHAUSTED,
    Unavailable: Status.UNAVAILABLE,
    PlumError: Status.INTERNAL,
}


def status_for(exc: PlumError) -> Status:
    for cls in type(exc).__mro__:
        if cls in GRPC_STATUS:
            return GRPC_STATUS[cls]
    return Status.INTERNAL


def grpc_error(exc: PlumError) -> GRPCError:
    message = f"{exc.field}: {exc.message}" if exc.field and exc.field not in exc.message \
        else exc.message
    return GRPCError(status_for(exc), message)
