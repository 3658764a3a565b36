"""Orthanc as the sending PACS: the vault is one of its DICOM modalities.

A synthetic study is uploaded into Debian's Orthanc over its REST API, and
Orthanc is told to push it to the vault (``POST /modalities/{id}/store``),
as a PACS administrator would. The vault must hold every instance,
bit-exact, with its access-log records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from dicom_ingest.synthetic import encode
from tests.cstore_support import small_series, studies, wait_until_closed
from tests.services.dicom_peers import OrthancServer, Receiver, register_node
from vault.catalog.models import AuditEvent, Instance
from vault.reader import open_instance

MODALITY = "dicom-vault"
ORTHANC_TIMEOUT = 120.0  # an upper bound for a hung peer, not a timing check


@pytest.fixture
def orthanc_client(orthanc: OrthancServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=orthanc.url, timeout=ORTHANC_TIMEOUT) as client:
        yield client


@pytest.fixture
def vault_as_modality(
    orthanc: OrthancServer, orthanc_client: httpx.Client, receiver: Receiver
) -> Iterator[str]:
    """The receiver registered in Orthanc as a modality, Orthanc's AE title
    registered in the vault as a PACS node; returns that node's id."""
    node_id, _org = register_node(receiver.vault, orthanc.aet)
    modality = {"AET": receiver.ae_title, "Host": receiver.host, "Port": receiver.port}
    orthanc_client.put(f"/modalities/{MODALITY}", content=json.dumps(modality)).raise_for_status()
    yield node_id
    orthanc_client.delete(f"/modalities/{MODALITY}")


def upload_study(client: httpx.Client, payloads: list[bytes]) -> str:
    """Upload instances into Orthanc; return the Orthanc id of their study."""
    parents = set()
    for payload in payloads:
        reply = client.post("/instances", content=payload)
        reply.raise_for_status()
        parents.add(reply.json()["ParentStudy"])
    (study,) = parents
    return str(study)


def data_set_bytes(part10: bytes) -> bytes:
    """Everything after the File Meta Information (which the receiver rebuilds)."""
    return part10[part10.index(b"\x08\x00\x05\x00") :]


def events_of(receiver: Receiver, action: str) -> list[AuditEvent]:
    with receiver.vault.catalog.session() as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        return list(session.scalars(query.order_by(AuditEvent.seq)))


class TestOrthancPushesAStudy:
    def test_every_instance_is_stored_bit_exact_and_logged(
        self, orthanc_client: httpx.Client, receiver: Receiver, vault_as_modality: str
    ) -> None:
        datasets = small_series(5, seed=41)
        payloads = [encode(ds) for ds in datasets]
        study = upload_study(orthanc_client, payloads)
        try:
            reply = orthanc_client.post(
                f"/modalities/{MODALITY}/store",
                content=json.dumps({"Resources": [study], "Synchronous": True}),
            )
        finally:
            orthanc_client.delete(f"/studies/{study}")
        reply.raise_for_status()
        job = reply.json()
        assert (job["InstancesCount"], job["FailedInstancesCount"]) == (5, 0)

        (stored_study,) = studies(receiver.vault)
        assert stored_study.instance_count == 5
        with receiver.vault.catalog.session() as session:
            rows = session.execute(
                select(Instance.id, Instance.instance_number).order_by(Instance.instance_number)
            ).all()
        read_back = []
        for instance_id, _number in rows:
            with open_instance(receiver.vault, instance_id) as stream:
                read_back.append(data_set_bytes(stream.read()))
        assert read_back == [data_set_bytes(p) for p in payloads]

        actor = f"pacs:{vault_as_modality}"
        events = events_of(receiver, "instance.store")
        assert [(e.actor, e.outcome) for e in events] == [(actor, "success")] * 5
        assert {e.object_id for e in events} == {instance_id for instance_id, _ in rows}
        assert all('"channel":"cstore"' in e.detail for e in events)
        wait_until_closed(receiver)  # Orthanc answers on the release reply, before the close
        sessions = events_of(receiver, "association")
        assert [(e.actor, e.outcome) for e in sessions] == [(actor, "open"), (actor, "closed")]
        assert '"stored":5' in sessions[-1].detail
        assert receiver.vault.audit.verify() == []

    def test_orthanc_echo_reaches_the_vault(
        self, orthanc_client: httpx.Client, vault_as_modality: str
    ) -> None:
        reply = orthanc_client.post(f"/modalities/{MODALITY}/echo", content="{}")
        assert reply.status_code == 200

    def test_orthanc_with_an_unregistered_ae_title_stores_nothing(
        self, orthanc: OrthancServer, orthanc_client: httpx.Client, receiver: Receiver
    ) -> None:
        modality = {"AET": receiver.ae_title, "Host": receiver.host, "Port": receiver.port}
        orthanc_client.put(f"/modalities/{MODALITY}", content=json.dumps(modality))
        study = upload_study(orthanc_client, [encode(ds) for ds in small_series(2, seed=43)])
        try:
            reply = orthanc_client.post(
                f"/modalities/{MODALITY}/store",
                content=json.dumps({"Resources": [study], "Synchronous": True}),
            )
        finally:
            orthanc_client.delete(f"/studies/{study}")
            orthanc_client.delete(f"/modalities/{MODALITY}")
        assert reply.status_code >= 400
        assert studies(receiver.vault) == []
        assert list(receiver.vault.store.iter_keys()) == []
