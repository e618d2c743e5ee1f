"""REST specifics: Google's error envelope and the transcoding details. The scenarios that must
give the same results over gRPC and REST, for v2 and v2beta3 alike, are in test_v2beta3.py."""

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from opentasks.testing import ServerProcess

pytestmark = pytest.mark.integration


def test_rest_errors_use_googles_envelope(server: ServerProcess) -> None:
    def call(method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            server.rest_url + path, data=body, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    code, body = call("POST", "/v2/projects/p/locations/l/queues", b'{"name": "bad"}')
    assert code == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.Help"
    assert call("POST", "/v2/projects/p/locations/l/queues", b"{not json")[0] == 400
    assert call("POST", "/v2/projects/p/locations/l/queues", b'{"rateLimits": "fast"}')[0] == 400
    assert call("GET", "/v2/projects/p/locations/l/queues/q/nonsense")[1]["error"]["status"] == "NOT_FOUND"
    assert call("PUT", "/v2/projects/p/locations/l/queues")[0] == 404
    code, body = call("GET", "/v2/projects/p/locations/l/queues?key=abc&prettyPrint=false&%24alt=json")
    assert code == 200 and body == {}
    assert (
        call("POST", "/v2/projects/p/locations/l/queues", b'{"name": "projects/p/locations/l/queues/r"}')[0]
        == 200
    )
    code, body = call("GET", "/v2/projects/p/locations/l/queues/r")
    assert body["state"] == "RUNNING" and body["rateLimits"]["maxBurstSize"] == 100
    code, body = call("GET", "/v2/projects/p/locations/l/queues/r?%24alt=json%3Benum-encoding%3Dint")
    assert body["state"] == 1
    code, body = call("POST", "/v2/projects/example.com:proj/locations/l/queues/r:pause", b"{}")
    assert code == 404 and "Queue does not exist" in body["error"]["message"]  # colon in the project ID
