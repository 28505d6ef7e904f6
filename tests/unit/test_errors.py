import pytest

from plum.api.errors import status_for
from plum.errors import (
    BadRequest,
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


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (BadRequest("x"), 400, "invalid"),
        (Invalid("x", field="a.b"), 422, "invalid"),
        (Unauthorized("x"), 401, "unauthorized"),
        (Forbidden("x"), 403, "forbidden"),
        (NotFound("x"), 404, "not_found"),
        (Conflict("x"), 409, "conflict"),
        (InvalidState("x"), 409, "invalid_state"),
        (TooLarge("x"), 413, "too_large"),
        (Unavailable("x"), 503, "unavailable"),
        (PlumError("x"), 500, "internal"),
    ],
)
def test_error_tree_maps_to_status_and_code(error, status, code):
    assert status_for(error) == status
    assert error.code.value == code


def test_subclass_inherits_its_parents_status():
    class NoSuchWorkflow(NotFound):
        pass

    assert status_for(NoSuchWorkflow("gone")) == 404
