from __future__ import annotations


def test_health(client):
    assert client.get("/v1/health").status_code == 200
