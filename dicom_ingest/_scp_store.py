"""The C-STORE, C-ECHO and association event handlers of the receiver (private).

Each handler is a small function bound with pynetdicom's
``evt_handlers=[(event, handler, [context])]``. The C-STORE handler adapts the
received data set to a Part 10 stream (no copy of the pixel bytes, nothing
spooled to disk), works out the case, and calls the one
:class:`~dicom_ingest.pipeline.IngestPipeline`. It answers ``0x0000`` only
after the pipeline returned, that is once the instance is encrypted, durably
stored and catalogued; a refusal is answered with the status the one table
in :mod:`vault.errors` gives; a data set whose SOP Class is not the
negotiated abstract syntax is refused with 0xA900 (does not match SOP class).
"""

from __future__ import annotations

import io
import logging
import ssl
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from sqlalchemy import select

from crypto.errors import CryptoError
from dicom_ingest._scp_part10 import part10_stream
from dicom_ingest._scp_peers import CallerFacts, PeerRegistry, PeerSession, Refusal
from dicom_ingest._scp_transport import peer_certificate_sha256
from dicom_ingest.pipeline import IngestOrigin, IngestPipeline
from vault.catalog.models import Case
from vault.core import Vault
from vault.errors import VaultError, dimse_error_comment, dimse_status
from vault.logs import withheld_traceback
from vault.settings import ScpSettings
from vault.settle import StudySettledHooks

log = logging.getLogger("dicom_ingest.scp")

_STANDARD_LOGGERS = (
    ("EVT_DIMSE_RECV", standard_dimse_recv_handler),
    ("EVT_DIMSE_SENT", standard_dimse_sent_handler),
    ("EVT_PDU_RECV", standard_pdu_recv_handler),
    ("EVT_PDU_SENT", standard_pdu_sent_handler),
)

SUCCESS = 0x0000
# An unexpected failure inside the receiver: "Refused: Out of Resources" tells
# the PACS to keep the instance and retry later (PS3.4 Annex B.2.3).
UNEXPECTED_FAILURE = 0xA700
# A-ASSOCIATE-RJ: rejected-permanent, DICOM UL service-user, calling AE title
# not recognised, or called AE title not recognised (PS3.8 Section 9.3.4).
REJECT_UNKNOWN_CALLER = (0x01, 0x01, 0x03)
REJECT_UNKNOWN_CALLED = (0x01, 0x01, 0x07)
# Rejected-transient, service-user, no reason given: try again later.
REJECT_TRANSIENT = (0x02, 0x01, 0x01)
_CASE_PROBE_BYTES = 256 * 1024


@dataclass(frozen=True)
class ReceiverContext:
    """What the handlers share: the vault, the pipeline, who is connected."""

    vault: Vault
    pipeline: IngestPipeline
    peers: PeerRegistry
    case_tag: BaseTag
    hooks: StudySettledHooks
    ae_title: str = "DICOMVAULT"
    # For the associations the receiver opens itself (commitment reports).
    client_tls: ssl.SSLContext | None = None
    # The receiver's settings (storage commitment reports and their retries).
    settings: ScpSettings = field(default_factory=ScpSettings)


def case_tag_for(keyword: str) -> BaseTag:
    """The tag of the configured case attribute. Raises ValueError if unknown."""
    try:
        return Tag(keyword)
    except ValueError as exc:
        raise ValueError("scp.case_attribute is not a DICOM keyword") from exc


def _probe_case_value(dataset: memoryview, transfer_syntax: UID, tag: BaseTag) -> str | None:
    """The case attribute's value from the front of the data set, if it decodes."""
    head = bytes(dataset[:_CASE_PROBE_BYTES])
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(head, _CASE_PROBE_BYTES)
    try:
        parsed = read_dataset(
            io.BytesIO(head),
            transfer_syntax.is_implicit_VR,
            transfer_syntax.is_little_endian,
            stop_when=lambda element_tag, _vr, _length: element_tag > tag,
            specific_tags=[tag],
        )
        value = parsed.get(tag)
        text = str(value.value).strip() if value is not None and value.value else ""
    except (ValueError, TypeError, KeyError, EOFError, NotImplementedError, struct.error):
        return None
    return text or None


def resolve_case(context: ReceiverContext, peer: PeerSession, value: str | None) -> str | None:
    """The open case of the peer's organisation named ``value``, else ``None`` (inbox)."""
    if value is None:
        return None
    if value not in peer.case_cache:
        with context.vault.catalog.session() as session:
            peer.case_cache[value] = session.scalar(
                select(Case.id).where(
                    Case.reference == value,
                    Case.organisation_id == peer.organisation_id,
                    Case.status == "open",
                )
            )
    return peer.case_cache[value]


def log_unexpected(what: str, exc: BaseException) -> None:
    """Log an unexpected exception by type and frames: its message may quote data."""
    log.error("%s failed unexpectedly\n%s", what, withheld_traceback(exc))


def refusal(exc: VaultError | CryptoError) -> Dataset:
    """The C-STORE-RSP status of a refusal, with its reason as the Error Comment."""
    answer = Dataset()
    answer.Status = dimse_status(exc)
    answer.ErrorComment = dimse_error_comment(exc)
    return answer


def handle_store(event: Any, context: ReceiverContext) -> int | Dataset:
    """EVT_C_STORE: hand the instance to the pipeline; answer its status."""
    peer = context.peers.get(id(event.assoc))
    if peer is None:  # not admitted: cannot happen once EVT_REQUESTED ran
        return refusal(VaultError("association not admitted"))
    try:
        status = _store(event, context, peer)
    except Exception as exc:  # noqa: BLE001 (a DIMSE status must answer every failure)
        log_unexpected("C-STORE", exc)
        status = UNEXPECTED_FAILURE
    if status == SUCCESS:
        peer.stored += 1
    else:
        peer.refused += 1
    return status


def _store(event: Any, context: ReceiverContext, peer: PeerSession) -> int | Dataset:
    stream, dataset = part10_stream(event)
    transfer_syntax = UID(event.context.transfer_syntax)
    case_value = _probe_case_value(dataset, transfer_syntax, context.case_tag)
    origin = IngestOrigin(
        channel="cstore",
        actor=peer.actor,
        organisation_id=peer.organisation_id,
        case_id=resolve_case(context, peer, case_value),
        remote=peer.remote,
        declared_sop_class=str(event.context.abstract_syntax),
    )
    try:
        result = context.pipeline.ingest(stream, origin)
    except (VaultError, CryptoError) as exc:
        log.info("C-STORE refused: %s", exc.reason if isinstance(exc, VaultError) else "crypto")
        return refusal(exc)
    peer.duplicates += result.duplicate
    return SUCCESS


def handle_echo(event: Any, context: ReceiverContext) -> int:
    """EVT_C_ECHO: always success for an admitted caller."""
    return SUCCESS


def _caller(event: Any) -> CallerFacts:
    assoc = event.assoc
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    return CallerFacts(
        calling_ae_title=str(assoc.requestor.primitive.calling_ae_title),
        called_ae_title=str(assoc.requestor.primitive.called_ae_title),
        address=str(assoc.requestor.address),
        port=int(assoc.requestor.port),
        tls=sock is not None and hasattr(sock, "getpeercert"),
        cert_sha256=peer_certificate_sha256(sock) if sock is not None else None,
    )


def handle_requested(event: Any, context: ReceiverContext) -> None:
    """EVT_REQUESTED: admit a registered caller, reject anyone else (A-ASSOCIATE-RJ)."""
    try:
        context.peers.admit(id(event.assoc), _caller(event))
    except Refusal as refusal:  # logged by the registry
        called = refusal.reason == "called-ae-title"
        _reject(event.assoc, REJECT_UNKNOWN_CALLED if called else REJECT_UNKNOWN_CALLER)
    except Exception as exc:  # noqa: BLE001 (the caller must get an answer, not silence)
        log_unexpected("association admission", exc)
        _reject(event.assoc, REJECT_TRANSIENT)


def _reject(assoc: Any, result_source_diagnostic: tuple[int, int, int]) -> None:
    """Send A-ASSOCIATE-RJ and wait until it is on the wire (as pynetdicom's own
    rejections do) before the connection is closed."""
    assoc.acse.send_reject(*result_source_diagnostic)
    assoc.kill()


def handle_conn_open(event: Any, context: ReceiverContext) -> None:
    """EVT_CONN_OPEN: unbind pynetdicom's standard logging handlers from the
    association: at DEBUG level they log the UIDs of every message."""
    for name, handler in _STANDARD_LOGGERS:
        event.assoc.unbind(getattr(evt, name), handler)


def handle_aborted(event: Any, context: ReceiverContext) -> None:
    """EVT_ABORTED: log the association's close as aborted."""
    context.peers.close(id(event.assoc), aborted=True)


def handle_closed(event: Any, context: ReceiverContext) -> None:
    """EVT_CONN_CLOSE: log the association's close (if not already logged)."""
    context.peers.close(id(event.assoc), aborted=False)
