"""The OpenAPI 3.1 document, generated from the route tables and their msgspec models."""

from __future__ import annotations

from typing import Any

import msgspec

import plum
from plum.api.errors import ErrorBody
from plum.api.http import RouteSpec

REF = "#/components/schemas/{name}"


def build_openapi(specs: list[RouteSpec]) -> dict[str, Any]:
    models = [ErrorBody]
    for spec in specs:
        for model in (spec.body, spec.response):
            if model is not None and model is not str:
                models.append(model)
    schemas, components = msgspec.json.schema_components(models, ref_template=REF)
    schema_of = dict(zip(map(_key, models), schemas, strict=True))
    paths: dict[str, dict] = {}
    for spec in specs:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Plum API",
            "version": plum.__version__,
            "description": "Distributed task orchestration and scheduling.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }


def _key(model: Any) -> str:
    return repr(model)


def _operation(spec: RouteSpec, schema_of: dict[str, dict]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": spec.summary,
        "tags": [spec.tag],
        "operationId": f"{spec.method.lower()}_{spec.handler.__name__}",
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_params(spec.path)
    ]
    params += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "description": q.description,
            "schema": {"type": q.type},
        }
        for q in spec.query
    ]
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema_of[_key(spec.body)]}},
        }
    op["responses"] = {str(spec.status): _success(spec, schema_of), "default": _error_response()}
    return op


def _success(spec: RouteSpec, schema_of: dict[str, dict]) -> dict[str, Any]:
    if spec.status == 204:
        return {"description": "done, no content"}
    if spec.response is None or spec.response is str:
        return {"description": "ok", "content": {spec.content_type: {"schema": {"type": "string"}}}}
    return {
        "description": "ok",
        "content": {spec.content_type: {"schema": schema_of[_key(spec.response)]}},
    }


def _error_response() -> dict[str, Any]:
    return {
        "description": "error, in the one JSON error shape",
        "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorBody")}}},
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]
