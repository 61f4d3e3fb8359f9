"""Batch issuance: one operation, one 0600 bundle, the same certificates `issue` makes."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from certs.cli import bundle_device_ids, bundle_meter_ids
from certs.registrar import Registrar, RegistrarError, read_bundle, write_bundle
from edge import crypto
from edge.portable import cwt


def test_issue_many_writes_one_bundle_readable_only_by_its_owner(tmp_path: Path) -> None:
    registrar = Registrar.init(tmp_path / "ca")
    ids = bundle_device_ids("gw-", 50)
    assert ids[0] == "gw-000001" and ids[-1] == "gw-000050"
    now_s = int(time.time())
    issued = registrar.issue_many(ids, now_s, lambda d: bundle_meter_ids(d, 3))
    path = tmp_path / "fleet.jsonl"
    write_bundle(path, registrar, issued)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found = read_bundle(path)
    assert [i.device_id for i in found] == ids
    for identity in found[:5]:
        claims = cwt.verify(identity.certificate, registrar.public_key, now_s, crypto.verify)
        assert claims.public_key == identity.key.public_key()
        assert claims.meters == [f"{identity.device_id}.m{j}" for j in (1, 2, 3)]
    log = (tmp_path / "ca" / "issued.jsonl").read_text().splitlines()
    assert len(log) == 50 and json.loads(log[0])["device_id"] == "gw-000001"


def test_batch_refuses_duplicates_bad_ids_and_bad_bundles(tmp_path: Path) -> None:
    registrar = Registrar.init(tmp_path / "ca")
    with pytest.raises(RegistrarError):
        registrar.issue_many(["a", "a"], 0)
    with pytest.raises(RegistrarError):
        registrar.issue_many(["bad id"], 0)
    with pytest.raises(RegistrarError):
        registrar.issue_many([], 0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "gridledger-identities", "version": 1, "count": 1}\n{"x": 1}\n')
    with pytest.raises(RegistrarError) as caught:
        read_bundle(bad)
    assert caught.value.code == "certs.bundle" and ":2:" in str(caught.value)
