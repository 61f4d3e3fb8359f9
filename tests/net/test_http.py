"""HTTP status, Prometheus metrics and the OpenAPI document, over a real socket."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from .conftest import Pki, coap_client, coap_post, loopback_config, make_node, run, serving


async def http_get(port: int, path: str) -> tuple[int, str, str]:
    def fetch() -> tuple[int, str, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers["content-type"], response.read().decode()

    return await asyncio.to_thread(fetch)


def test_status_metrics_and_openapi(pki: Pki) -> None:
    device = pki.device("gw-http")

    async def scenario() -> None:
        node = make_node(pki, block_interval_s=None)
        async with serving(node, loopback_config()) as server, coap_client() as cl:
            port = server.ports["http"]
            await coap_post(cl, server.ports["coap"], device.message(1))
            await coap_post(cl, server.ports["coap"], b"\x00garbage")
            await node.commit()
            status, kind, body = await http_get(port, "/v1/status")
            assert (status, kind) == (200, "application/json")
            assert json.loads(body) == node.status()
            assert json.loads(body)["height"] == 1
            status, kind, text = await http_get(port, "/metrics")
            assert status == 200 and kind.startswith("text/plain")
            assert 'gl_net_messages_in_total{transport="coap"} 2.0' in text
            assert 'gl_net_admissions_total{outcome="accepted",transport="coap"} 1.0' in text
            assert 'gl_net_rejects_total{code="cbor.trailing",transport="coap"} 1.0' in text \
                or 'gl_net_rejects_total{code="cose.tag",transport="coap"} 1.0' in text, text
            assert 'gl_net_queue_depth{queue="ingress_coap"} 0.0' in text
            _, _, openapi = await http_get(port, "/openapi.json")
            assert "/v1/status" in json.loads(openapi)["paths"]

    run(scenario())
