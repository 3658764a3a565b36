"""Helpers shared by the C-STORE receiver tests: SCUs, raw sends, catalog counts."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import func, select

from dicom_ingest._scp_transport import AcceptBalance, shared_listener
from dicom_ingest.scp import StorageScp
from dicom_ingest.synthetic import make_ct_series
from tests.services.dicom_peers import Dcmtk, Receiver, nodelay_env
from vault.catalog.models import Instance, Study
from vault.core import Vault
from vault.settings import ScpSettings


def small_series(n: int = 3, *, seed: int = 0, **kwargs: object) -> list[Dataset]:
    return list(make_ct_series(n, rows=64, columns=64, seed=seed, **kwargs))  # type: ignore[arg-type]


def associate(receiver: Receiver, ae_title: str = "PACS1", *contexts: str) -> Association:
    ae = AE(ae_title=ae_title)
    for context in contexts or (CTImageStorage,):
        ae.add_requested_context(context, ExplicitVRLittleEndian)
    return ae.associate(receiver.host, receiver.port, ae_title=receiver.ae_title)


CLOSE_WAIT_SECONDS = 60.0  # an upper bound for a hung receiver, not a timing check


def wait_until_closed(receiver: Receiver) -> None:
    """Return once the receiver has logged and audited every association's close.

    A peer's release (or storescu's exit) returns on the release reply; the
    receiver writes the close when the connection is gone, a moment later.
    """
    deadline = time.monotonic() + CLOSE_WAIT_SECONDS
    while receiver.scp.open_associations:
        assert time.monotonic() < deadline, "the receiver never logged the close"
        time.sleep(0.01)


def instance_count(vault: Vault) -> int:
    with vault.catalog.session() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def studies(vault: Vault) -> list[Study]:
    with vault.catalog.session() as session:
        return list(session.scalars(select(Study)))


def store_message(sop_class: str, sop_instance: str, payload: bytes) -> C_STORE:
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop_instance
    request.Priority = 2
    request.DataSet = io.BytesIO(payload)
    return request


def send_raw_store(assoc: Association, request: C_STORE) -> int:
    """Send a C-STORE whose data set bytes are given as they are; return the status."""
    context = assoc._get_valid_context(request.AffectedSOPClassUID, "", "scu")
    # Pause the requestor's reactor (as pynetdicom's own send_* methods do),
    # or it takes the response off the queue first.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(request, context.context_id)
        _context_id, response = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    return int(response.Status)


def send_partial_store(assoc: Association, request: C_STORE, fraction: float = 0.5) -> None:
    """Send only the first part of a C-STORE's P-DATA PDUs, then abort."""
    context = assoc._get_valid_context(request.AffectedSOPClassUID, "", "scu")
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    pdus = list(message.encode_msg(context.context_id, 16382))
    for pdu in pdus[: max(2, int(len(pdus) * fraction))]:
        assoc.dul.send_pdu(pdu)
    assoc.abort()


def run_storescu(
    dcmtk: Dcmtk,
    receiver: Receiver,
    files: list[Path],
    *,
    ae_title: str = "PACS1",
    tls: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [
        str(dcmtk.storescu),
        "-aet",
        ae_title,
        "-aec",
        receiver.ae_title,
        *(tls or []),
        receiver.host,
        str(receiver.port),
        *map(str, files),
    ]
    return subprocess.run(argv, capture_output=True, text=True, env=nodelay_env(), timeout=120)


@contextmanager
def receivers_on_one_socket(
    vault: Vault, settings: ScpSettings, count: int = 2
) -> Iterator[tuple[int, list[StorageScp]]]:
    """``count`` started receivers in this process sharing one listening socket
    and one :class:`AcceptBalance`, as receiver processes do; (port, receivers)."""
    listener = shared_listener("127.0.0.1", 0)
    counts, beats = [0] * count, [0.0] * count
    scps = [
        StorageScp(vault, settings, listener=listener, balance=AcceptBalance(counts, beats, n))
        for n in range(count)
    ]
    try:
        for scp in scps:
            scp.start()
        yield listener.getsockname()[1], scps
    finally:
        for scp in scps:
            scp.stop()
        listener.close()


def held_connections(scps: list[StorageScp]) -> list[int]:
    """Each receiver's count of accepted connections not yet closed."""
    return [scp.server.open_connections() for scp in scps if scp.server]
