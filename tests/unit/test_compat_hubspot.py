"""The private hubspot-api-client symbol dativo uses (``ApiClient.rest_client.pool_manager``), one test
per generated package dativo calls, plus the keywords the REST client passes to it.

The version is pinned exactly in pyproject.toml; when the pin moves, these tests say what to re-check.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import urllib3

from dativo_dagster.compat import hubspot as hubspot_compat

PACKAGES = [
    "hubspot.crm.objects",
    "hubspot.crm.properties",
    "hubspot.crm.owners",
    "hubspot.crm.associations.v4",
    "hubspot.oauth",
]


class Recorder:
    """A stand-in pool: records each request and answers with a canned ``urllib3.HTTPResponse``."""

    def __init__(self, status: int = 200, body: bytes = b"{}") -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.status = status
        self.body = body
        self.answers: list[urllib3.HTTPResponse] = []

    def request(self, method: str, url: str, **keywords: Any) -> urllib3.HTTPResponse:
        self.calls.append((method, url, keywords))
        answer = urllib3.HTTPResponse(body=self.body, status=self.status, headers={}, preload_content=True)
        self.answers.append(answer)
        return answer


def api(package: str, name: str, pool: Recorder) -> Any:
    module = importlib.import_module(package)
    client = module.ApiClient(configuration=module.Configuration(host="http://hubspot.test"))
    hubspot_compat.set_pool_manager(client, pool)
    return getattr(module, name)(api_client=client)


def test_pin_matches_the_installed_version() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"hubspot-api-client=={version("hubspot-api-client")}"' in pyproject


@pytest.mark.parametrize("package", PACKAGES)
def test_api_client_sends_through_rest_client_pool_manager(package: str) -> None:
    module = importlib.import_module(package)
    client = module.ApiClient(configuration=module.Configuration())
    assert isinstance(hubspot_compat.pool_manager_of(client), urllib3.PoolManager)
    replacement = Recorder()
    hubspot_compat.set_pool_manager(client, replacement)
    assert hubspot_compat.pool_manager_of(client) is replacement


def test_search_posts_a_json_body_and_returns_the_raw_response() -> None:
    pool = Recorder(body=b'{"total": 0, "results": []}')
    search = api("hubspot.crm.objects", "SearchApi", pool)
    answer = search.do_search("contacts", {"limit": 1}, _preload_content=False)
    (call,) = pool.calls
    assert call[0] == "POST" and call[1] == "http://hubspot.test/crm/v3/objects/contacts/search"
    assert set(call[2]) <= hubspot_compat.POOL_REQUEST_KEYWORDS
    assert call[2]["body"] == '{"limit": 1}'
    assert answer is pool.answers[0]  # _preload_content=False: the pool's own response comes back


def test_list_gets_with_query_fields() -> None:
    pool = Recorder(body=b'{"results": []}')
    basic = api("hubspot.crm.objects", "BasicApi", pool)
    basic.get_page("contacts", limit=100, properties=["email", "firstname"], archived=False, _preload_content=False)
    (call,) = pool.calls
    assert call[0] == "GET" and call[1] == "http://hubspot.test/crm/v3/objects/contacts"
    assert set(call[2]) <= hubspot_compat.POOL_REQUEST_KEYWORDS
    assert ("properties", "email") in call[2]["fields"] and ("properties", "firstname") in call[2]["fields"]


def test_token_exchange_posts_form_fields() -> None:
    pool = Recorder(body=b'{"access_token": "x", "expires_in": 1800}')
    tokens = api("hubspot.oauth", "TokensApi", pool)
    tokens.create(
        grant_type="refresh_token", client_id="c", client_secret="s", refresh_token="r", _preload_content=False
    )
    (call,) = pool.calls
    assert call[0] == "POST" and call[1] == "http://hubspot.test/oauth/v1/token"
    assert call[2]["encode_multipart"] is False and ("grant_type", "refresh_token") in call[2]["fields"]
    assert call[2]["headers"]["Content-Type"] == "application/x-www-form-urlencoded"


def test_associations_batch_read_posts_inputs() -> None:
    pool = Recorder(body=b'{"status": "COMPLETE", "results": []}')
    batch = api("hubspot.crm.associations.v4", "BatchApi", pool)
    batch.get_page("contacts", "companies", {"inputs": [{"id": "1"}]}, _preload_content=False)
    (call,) = pool.calls
    assert call[1] == "http://hubspot.test/crm/v4/associations/contacts/companies/batch/read"
    assert call[2]["body"] == '{"inputs": [{"id": "1"}]}'


def test_error_statuses_raise_the_packages_api_exception_with_status_and_body() -> None:
    from hubspot.crm.objects.exceptions import ApiException, NotFoundException

    search = api("hubspot.crm.objects", "SearchApi", Recorder(status=404, body=b'{"message": "gone"}'))
    with pytest.raises(NotFoundException) as missing:
        search.do_search("widgets", {}, _preload_content=False)
    assert missing.value.status == 404 and "gone" in missing.value.body
    conflict = api("hubspot.crm.objects", "SearchApi", Recorder(status=409, body=b"{}"))
    with pytest.raises(ApiException) as other:
        conflict.do_search("contacts", {}, _preload_content=False)
    assert other.value.status == 409
