"""CoAP ingest over real UDP sockets: aiocoap's client and libcoap's coap-client."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import aiocoap
import pytest

from aggregator.net.ports import MESSAGE_BYTES_MAX
from edge import crypto
from edge.portable import cbor, receipt

from .conftest import (
    NODE_ID,
    NODE_KEY,
    Device,
    Pki,
    coap_client,
    coap_post,
    loopback_config,
    make_node,
    run,
    serving,
    wait_until,
)

COAP_CLIENT = "/usr/bin/coap-client-notls"
PYCOSE_PYTHON = Path(__file__).resolve().parents[2] / ".venv-pycose" / "bin" / "python"


def code_of(response: aiocoap.Message) -> str:
    return str(response.code.dotted)


def test_accepted_batch_answers_changed_with_a_short_acceptance(pki: Pki) -> None:
    device = pki.device("gw-coap-1")

    async def scenario() -> None:
        async with serving(make_node(pki), loopback_config()) as server, coap_client() as cl:
            response = await coap_post(cl, server.ports["coap"], device.message(1))
            assert code_of(response) == "2.04"
            assert cbor.decode(response.payload) == {1: "gw-coap-1", 2: 1, 3: "accepted"}

    run(scenario())


def test_other_paths_and_methods_are_routed_as_aiocoap_routes_them(pki: Pki) -> None:
    """Uploads skip the Site's copy; every other request still gets aiocoap's routing."""
    message = pki.device("gw-coap-route").message(1)

    async def scenario() -> list[str]:
        async with serving(make_node(pki), loopback_config()) as server, coap_client() as cl:
            base = f"coap://127.0.0.1:{server.ports['coap']}"
            codes = []
            for method, path in ((aiocoap.GET, "/gl/v1/up"), (aiocoap.POST, "/gl/v1/nope"),
                                 (aiocoap.POST, "/gl/v1/up/extra"),
                                 (aiocoap.GET, "/gl/v1/ack/gw-coap-route")):
                request = aiocoap.Message(code=method, uri=base + path, payload=message)
                request.opt.content_format = 18
                codes.append(code_of(await cl.request(request).response))
            return codes

    assert run(scenario()) == ["4.05", "4.04", "4.04", "4.04"]


def test_rejections_carry_their_code_and_coap_class(pki: Pki) -> None:
    device = pki.device("gw-coap-2")
    revoked = pki.device("gw-revoked")
    good = device.message(5)
    tampered = bytearray(good)
    tampered[-10] ^= 0x01  # a byte of the signature
    foreign = device.message(6, meter="M-OTHER")

    async def scenario() -> None:
        async with serving(make_node(pki, block_interval_s=None), loopback_config()) as server, \
                coap_client() as cl:
            port = server.ports["coap"]
            cases = [
                (b"\xff\x00", "4.00", "cbor."),
                (bytes(tampered), "4.01", "cose.signature"),
                (revoked.message(1), "4.03", "cert.revoked"),
                (foreign, "4.03", "cert.meter"),
                (b"\x00" * 20_000, "4.13", "net.too_large"),
            ]
            for payload, coap_code, code in cases:
                response = await coap_post(cl, port, payload)
                assert code_of(response) == coap_code, (code, response.payload)
                assert response.payload.decode().startswith(code), response.payload
            assert code_of(await coap_post(cl, port, good)) == "2.04"
            response = await coap_post(cl, port, good)
            assert (code_of(response), response.payload[:17]) == ("4.09", b"mempool.duplicate")
            response = await coap_post(cl, port, good, content_format=60)
            assert code_of(response) == "4.15"
            assert response.payload.startswith(b"net.content_format")

    run(scenario())


def test_full_mempool_answers_service_unavailable_with_max_age(pki: Pki) -> None:
    device = pki.device("gw-coap-3")

    async def scenario() -> None:
        node = make_node(pki, block_interval_s=None, mempool_max=2, retry_after_s=3)
        async with serving(node, loopback_config()) as server, coap_client() as cl:
            port = server.ports["coap"]
            for seq in (1, 2):
                assert code_of(await coap_post(cl, port, device.message(seq))) == "2.04"
            response = await coap_post(cl, port, device.message(3))
            assert code_of(response) == "5.03"
            assert response.opt.max_age == 3
            assert response.payload.startswith(b"mempool.full")
            await node.commit()
            assert code_of(await coap_post(cl, port, device.message(3))) == "2.04"

    run(scenario())


def test_observe_ack_delivers_the_signed_commit_receipt(pki: Pki) -> None:
    device = pki.device("gw-coap-4")

    async def scenario() -> None:
        node = make_node(pki, block_interval_s=None)
        async with serving(node, loopback_config()) as server, coap_client() as cl:
            port = server.ports["coap"]
            uri = f"coap://127.0.0.1:{port}/gl/v1/ack/gw-coap-4"
            first = await cl.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
            assert code_of(first) == "4.04"
            request = cl.request(aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0))
            initial = await request.response
            assert (code_of(initial), initial.payload) == ("2.05", b"")
            updates = aiter(request.observation)
            assert code_of(await coap_post(cl, port, device.message(9))) == "2.04"
            await node.commit()
            notification = await asyncio.wait_for(anext(updates), 10)
            _, device_id, entries = receipt.verify(
                notification.payload, {NODE_ID: NODE_KEY.public_key()}, crypto.verify)
            assert (device_id, entries) == ("gw-coap-4", [receipt.committed(9, 1)])
            request.observation.cancel()
            plain = await cl.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
            assert plain.payload == notification.payload
            await wait_until(lambda: server.hub.received == 1, what="receipt in hub")

    run(scenario())


async def _coap_client_post(port: int, path: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        COAP_CLIENT, "-m", "post", "-t", "18", "-f", str(path), "-B", "10",
        f"coap://127.0.0.1:{port}/gl/v1/up",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 20)
    return process.returncode or 0, output.decode(errors="replace")


def pycose_signed(device: Device, seq: int) -> bytes:
    """The batch `device.message(seq)` would carry, signed by pycose instead of our code."""
    item = device.batch(seq)
    public = device.key.public_key()
    request = {
        "d": device.key.to_bytes().hex(), "x": public[1:33].hex(), "y": public[33:].hex(),
        "kid": device.device_id.encode().hex(), "payload": item.encode().hex(),
        "kcwt": device.certificate.hex(),
    }
    done = subprocess.run(
        [str(PYCOSE_PYTHON), str(Path(__file__).with_name("pycose_sign.py"))],
        input=json.dumps(request), capture_output=True, text=True, timeout=30, check=True,
    )
    return bytes.fromhex(done.stdout)


@pytest.mark.interop
def test_libcoap_client_posts_a_pycose_batch_and_a_tampered_copy(
    pki: Pki, tmp_path: Path
) -> None:
    if shutil.which(COAP_CLIENT) is None:
        pytest.skip("libcoap's coap-client-notls is not installed")
    if not PYCOSE_PYTHON.exists():
        pytest.skip("the pycose environment (.venv-pycose) is not set up")
    good = pycose_signed(pki.device("gw-libcoap"), 1)
    tampered = bytearray(good)
    tampered[len(good) // 2] ^= 0x40
    (tmp_path / "good.cose").write_bytes(good)
    (tmp_path / "bad.cose").write_bytes(bytes(tampered))

    async def scenario() -> tuple[str, str]:
        node = make_node(pki, block_interval_s=None)
        async with serving(node, loopback_config()) as server:
            port = server.ports["coap"]
            _, accepted = await _coap_client_post(port, tmp_path / "good.cose")
            _, rejected = await _coap_client_post(port, tmp_path / "bad.cose")
            assert node.submitted == [good]
            return accepted, rejected

    accepted, rejected = run(scenario())
    assert "4." not in accepted and "accepted" in accepted, accepted
    assert "4.0" in rejected, rejected
    codes = ("cose.", "cbor.", "batch.", "cert.")
    assert any(code in rejected for code in codes), rejected


def test_blockwise_upload_is_cut_off_at_the_size_limit(pki: Pki) -> None:
    async def scenario() -> None:
        async with serving(make_node(pki), loopback_config()) as server, coap_client() as cl:
            response = await coap_post(cl, server.ports["coap"], b"\xd2" * 200_000)
            assert code_of(response) == "4.13"
            assert response.opt.size1 == MESSAGE_BYTES_MAX
            assert response.payload.startswith(b"net.too_large")
            rejects = server.metrics.registry.get_sample_value(
                "gl_net_rejects_total", {"transport": "coap", "code": "net.too_large"})
            assert rejects == 1

    run(scenario())
