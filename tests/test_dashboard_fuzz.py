"""Property-based fuzz of the dashboard API from its own OpenAPI schema (schemathesis): whatever the
parameters and bodies, valid or not, no 5xx, and every response matches the schema. Bounded: a few
dozen examples per operation and mode, against a run recorded in a real Redis, control endpoints called
with the token (the test store's desired replicas and pause flag change; nothing else reads them).

/api/stream is left out: it is endless unless asked for a few events (test_dashboard_api.py covers it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from dashboard_data import SimulatedRun
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from services.dashboard import create_app
from services.dashboard.runs import create_runs_app
from services.store import RedisStore

pytestmark = pytest.mark.slow
TOKEN = "fuzz-token"
EXAMPLES = 25
BUDGET_S = 60


@pytest.fixture(scope="module")
def api_schema(redis_url: str) -> Iterator[schemathesis.BaseSchema]:
    store = RedisStore(redis_url, run_name=f"fuzz-{uuid.uuid4().hex[:8]}")
    sim = SimulatedRun(store, store.run_name, problems=100, steps=5, per_step=8)
    sim.start()
    sim.run()
    app = create_app(store, store.run_name, TOKEN)
    app.state.view.refresh()
    yield schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path="/api/stream")
    store.clear()
    store.close()


@pytest.fixture(scope="module")
def runs_schema(redis_url: str, api_schema: schemathesis.BaseSchema) -> Iterator[schemathesis.BaseSchema]:
    """The dashboard over every run of the session's Redis (the fuzzed run among them)."""
    app = create_runs_app(redis_url, TOKEN)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    app.state.stop()  # what its lifespan does: the runs' polls, opened by comparisons
    app.state.apps.runs.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_server_errors_and_responses_match_the_schema(api_schema: schemathesis.BaseSchema, mode) -> None:
    fuzz(api_schema, mode, 13)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_the_runs_api_has_no_server_errors_and_matches_its_schema(runs_schema: schemathesis.BaseSchema, mode) -> None:
    fuzz(runs_schema, mode, 2)


def fuzz(api_schema: schemathesis.BaseSchema, mode: GenerationMode, expected_operations: int) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == expected_operations
    started = time.monotonic()
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not operation.definition.raw.keys() & {"parameters", "requestBody"}:
            continue  # nothing in the request could be made invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})

        check()
    assert time.monotonic() - started < BUDGET_S
