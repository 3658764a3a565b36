"""Sending a storage-commitment N-EVENT-REPORT (private).

:class:`ReportSender` sends a report on the requester's association while it
is open, or on a new association to the node's ``host`` (``"host"`` or
``"host:port"``, port 104 if none), asking for the SCP role of the Storage
Commitment Push Model SOP Class, over TLS when the receiver speaks TLS. Each
call answers only whether the PACS acknowledged the report with success;
why it did not is logged by its type, never with a UID.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel

from dicom_ingest._scp_transport import client_tls_context
from vault.catalog.models import PacsNode
from vault.core import Vault
from vault.settings import ScpSettings

log = logging.getLogger("dicom_ingest.commitment")

# The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.1).
COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
DEFAULT_PORT = 104


@dataclass(frozen=True)
class ReportSender:
    """Sends reports as the receiver's AE title, with its client TLS context."""

    ae_title: str
    client_tls: ssl.SSLContext | None = None
    timeout_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: ScpSettings) -> ReportSender:
        """The sender of ``settings`` (raises OSError or SSLError on bad TLS files)."""
        return cls(
            settings.ae_title, client_tls_context(settings), settings.network_timeout_seconds
        )

    def on_association(self, assoc: Any, event_type: int, report: Dataset) -> bool:
        """Send on ``assoc`` if it is still established."""
        if not assoc.is_established:
            return False
        try:
            status, _reply = assoc.send_n_event_report(
                report, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
            )
        except (RuntimeError, ValueError) as exc:
            log.info("commitment report not sent on the open association: %s", type(exc).__name__)
            return False
        return bool(status) and status.Status == 0x0000

    def to_node(self, vault: Vault, node_id: str, event_type: int, report: Dataset) -> bool:
        """Send on a new association to the node's ``host`` (False if it has none)."""
        with vault.catalog.read_session() as session:
            node = session.get(PacsNode, node_id)
            target = (node.ae_title, node.host) if node is not None and node.host else None
        if target is None:
            return False
        try:
            assoc = self._associate(*target)
        except (OSError, ssl.SSLError, RuntimeError, ValueError) as exc:
            log.info("commitment report association failed: %s", type(exc).__name__)
            return False
        if not assoc.is_established:
            return False
        try:
            return self.on_association(assoc, event_type, report)
        finally:
            assoc.release()

    def _associate(self, ae_title: str, address: str) -> Any:
        host, _sep, port = address.partition(":")
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_seconds
        ae.connection_timeout = self.timeout_seconds
        ae.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        tls = self.client_tls
        return ae.associate(
            host,
            int(port or DEFAULT_PORT),
            ae_title=ae_title,
            ext_neg=[role],
            tls_args=(tls, host) if tls is not None else None,
        )
