"""The one error tree. HTTP mapping lives in `plum.api.errors`, gRPC mapping in `plum.rpc`."""

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INVALID_STATE = "invalid_state"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class PlumError(Exception):
    """Base of every error Plum raises on purpose."""

    code = ErrorCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or {}


class Invalid(PlumError):
    """Bad input; `field` names the offending field (`nodes[2].taskDefId`)."""

    code = ErrorCode.INVALID


class BadRequest(Invalid):
    """Input that cannot be read at all (malformed JSON, a bad query parameter): HTTP 400.

    Plain `Invalid` is a well-formed request with a wrong field: HTTP 422.
    """


class NotFound(PlumError):
    code = ErrorCode.NOT_FOUND


class Conflict(PlumError):
    code = ErrorCode.CONFLICT


class InvalidState(PlumError):
    code = ErrorCode.INVALID_STATE


class Unauthorized(PlumError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(PlumError):
    code = ErrorCode.FORBIDDEN


class TooLarge(PlumError):
    code = ErrorCode.TOO_LARGE


class Unavailable(PlumError):
    code = ErrorCode.UNAVAILABLE


class ConfigError(PlumError):
    """A bad configuration value; the message names the key. Stops start-up."""

    code = ErrorCode.INVALID
