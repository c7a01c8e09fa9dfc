"""The API against its own OpenAPI schema (schemathesis): whatever the request, no answer
is a 500, none breaks the schema it documents, and every status and content type is one
the schema names (errors as application/problem+json). Bounded: a few examples an operation,
with an admin's token, on a store that has a day of data (SQLite)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.apikit import STORE, World, world

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def w(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(request, "sqlite", tmp_path_factory.mktemp("schema")) as made:
        yield made


@pytest.fixture(scope="module")
def client(w: World) -> Iterator[TestClient]:
    with w.client() as c:
        yield c


@pytest.fixture(scope="module")
def api_schema(client: TestClient) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_dict(client.get("/api/v1/openapi.json").json())
    # The live stream never ends by itself; test_api.py reads it.
    return schema.exclude(path_regex=r"/stream$")


EXAMPLES = 8  # an operation


def test_no_request_gets_a_500_or_an_answer_that_breaks_the_schema(
    api_schema: schemathesis.BaseSchema, client: TestClient, w: World
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            if "store" in case.path_parameters:
                case.path_parameters["store"] = STORE
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            kwargs["headers"] = {**(kwargs.get("headers") or {}), **w.auth("admin")}
            response = client.request(**kwargs)
            case.validate_response(
                response,
                checks=[
                    not_a_server_error,
                    response_schema_conformance,
                    status_code_conformance,
                    content_type_conformance,
                ],
            )

        check()
