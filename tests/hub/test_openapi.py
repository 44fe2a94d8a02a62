"""The OpenAPI document at /api/openapi.json matches the routes, and schemathesis, run against the
live server with every check, finds nothing: no server error, no undocumented status, content
type or body, no schema-valid request refused and no invalid one accepted."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from .conftest import HubFixture

pytestmark = pytest.mark.anyio
SCHEMATHESIS = str(Path(sys.executable).with_name("st"))
# Logging out and deleting the account end the session the run authenticates with: they get a
# run of their own, with a throwaway account.
DESTRUCTIVE = ("logout", "deleteUser")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # one loop is enough: this is about the API, not the event loop


@pytest.fixture
async def api(hub: HubFixture) -> AsyncIterator[str]:
    await hub.stop()
    hub.config["admins"] = frozenset({"root"})
    # the fuzzer sends thousands of requests and logins from one address
    await hub.start(api_rate=1e6, api_burst=10**6, login_per_user=10**6,
                    login_per_address=10**6)  # fmt: skip
    assert hub.service is not None and hub.service.web is not None
    yield f"http://127.0.0.1:{hub.service.web.server.address[1]}"


async def token(base: str, user: str) -> str:
    async with aiohttp.ClientSession() as session:
        body = {"user": user, "password": f"password-{user}"}
        async with session.post(base + "/api/users", json=body) as resp:
            assert resp.status == 201
            return str((await resp.json())["token"])


async def schemathesis(base: str, user: str, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        SCHEMATHESIS, "run", f"{base}/api/openapi.json", "--checks", "all", "--no-color",
        "--generation-database", "none", "--seed", "20261121", "--request-timeout", "10",
        "-H", f"Authorization: Bearer {await token(base, user)}",
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(240):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()[-6000:]


async def test_the_document_lists_exactly_the_api_routes(hub: HubFixture, api: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(api + "/api/openapi.json") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    documented = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert hub.service is not None and hub.service.web is not None
    app = hub.service.web.runner.app
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method not in ("HEAD", "OPTIONS")
        and route.resource.canonical != "/api/openapi.json"
    }
    assert served == documented
    ids = [op["operationId"] for item in doc["paths"].values() for k, op in item.items()
           if k != "parameters"]  # fmt: skip
    assert len(ids) == len(set(ids))


async def test_schemathesis_finds_nothing(hub: HubFixture, api: str) -> None:
    assert hub.service is not None and hub.service.web is not None
    key = hub.service.web.api_key
    excluded = [arg for op in DESTRUCTIVE for arg in ("--exclude-operation-id", op)]
    await schemathesis(api, "root", "-H", f"X-Api-Key: {key}", "--max-examples", "100",
                       *excluded)  # fmt: skip
    included = [arg for op in DESTRUCTIVE for arg in ("--include-operation-id", op)]
    await schemathesis(api, "throwaway", "--max-examples", "10", *included)
    statuses = {status for (_, _, status) in hub.service.web.chain.metrics.requests}
    assert not {s for s in statuses if s.startswith("5")}, statuses
    assert {"200", "201", "204", "400", "401", "403", "404", "409", "415",
            "422"} <= statuses  # fmt: skip
