"""Schemathesis against the OpenAPI a real hub serves (``lantern hub serve --http``),
authenticated as an admin: every operation, a bounded number of generated requests
each, checked for server errors (``not_a_server_error``) and for responses that do not
match the documented schema (``response_schema_conformance``).

Operations are fuzzed in path order with generation only (no shrinking), so the run
is bounded; failures are collected with a curl command that reproduces them and
reported together. Figures go to ``tests/artifacts/reliability/hostile-api.json``.

Not excluded: every operation is run. Destructive ones cannot lock the fuzzer out:
the admin cannot disable itself (409) and its token outlives any password change.
Operations the admin role may not use (biometric search, review, match requests,
reunion cases; separation of duties) answer 403 to every case and are still checked
for 5xx and for the shape of that 403.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.edge.mqtt_helpers import PrivateBroker
from tests.hostile.conftest import Figures
from tests.hub.served import ServedHub

pytestmark = [pytest.mark.hostile, pytest.mark.usefixtures("watchdog")]

EXAMPLES_PER_OPERATION = 6


def _describe(exc: BaseException) -> str:
    """The titles of a schemathesis failure group, or the error's first line."""
    if isinstance(exc, FailureGroup):
        return "; ".join(str(getattr(e, "title", e)) for e in exc.exceptions)[:300]
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedHub]:
    tmp: Path = tmp_path_factory.mktemp("served-hub")
    with PrivateBroker(tmp / "broker") as broker, ServedHub(tmp, broker.port) as hub:
        yield hub


def test_every_operation_answers_without_5xx_and_as_documented(
    served: ServedHub, figures: Figures
) -> None:
    base = str(served.http.base_url).rstrip("/")
    auth = {"Authorization": f"Bearer {served.token}"}
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json", headers=auth)
    checks = [not_a_server_error, response_schema_conformance]
    failures: list[dict[str, Any]] = []
    statuses: Counter[str] = Counter()
    operations = 0
    cases = 0

    def fuzz(operation: Any) -> None:
        label = f"{operation.method.upper()} {operation.path}"

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(operation.as_strategy())
        def run(case: Any) -> None:
            nonlocal cases
            cases += 1
            try:
                response = case.call_and_validate(base_url=base, headers=auth, checks=checks)
                statuses[f"{response.status_code // 100}xx"] += 1
            except (Exception, FailureGroup) as exc:  # a failed check: collected, not shrunk
                failures.append(
                    {
                        "operation": label,
                        "failure": _describe(exc),
                        "curl": case.as_curl_command(headers=auth, base_url=base),
                    }
                )

        run()

    for result in schema.get_all_operations():
        operations += 1
        fuzz(result.ok())

    figures.record(
        "api",
        "run",
        {
            "operations": operations,
            "cases": cases,
            "examples_per_operation": EXAMPLES_PER_OPERATION,
            "responses_by_class": dict(sorted(statuses.items())),
            "failures": len(failures),
        },
    )
    figures.record("api", "failures", failures)
    assert operations >= 70 and cases >= operations
    assert not failures, "\n".join(
        f"{f['operation']}: {f['failure']}\n  {f['curl']}" for f in failures
    )


def test_a_rule_with_a_long_time_zone_is_a_422(served: ServedHub) -> None:
    window = {"days": [0], "start": "21:00", "end": "07:00"}
    params = {"kind": "curfew", "zone_id": "z", "timezone": "a" * 300, "windows": [window]}
    response = served.http.post(
        "/api/v1/rules", json={"person_id": 1, "device_id": "wb-0001", "params": params}
    )
    assert response.status_code == 422, response.text
