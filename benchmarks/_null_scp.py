"""A pynetdicom storage SCP that stores nothing: the ceiling pynetdicom sets.

Accepts every storage SOP class of the vault's policy from any caller,
answers each C-STORE with success without looking at the data set, and
sets TCP_NODELAY on accepted sockets. ``--reactor stock`` runs pynetdicom's
own association threads (1 ms polling loops); ``--reactor vault`` the
event-driven ones of :mod:`dicom_ingest._scp_reactor`, as the vault's
receiver does. Used by ``benchmarks/cstore.py``::

    python -m benchmarks._null_scp PORT [--reactor stock|vault]
"""

from __future__ import annotations

import argparse
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import RequestHandler

from dicom_ingest._scp_reactor import VaultRequestHandler
from dicom_ingest._scp_transport import server_class
from dicom_ingest.validation import ValidationPolicy
from vault.settings import PolicySettings


def _store(event: Any) -> int:
    return 0x0000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--reactor", choices=("stock", "vault"), default="vault")
    args = parser.parse_args()
    ae = AE(ae_title="NULLSCP")
    ae.maximum_pdu_size = 0
    ae.require_called_aet = False
    policy = ValidationPolicy.from_settings(PolicySettings())
    for sop_class in sorted(policy.sop_classes):
        ae.add_supported_context(sop_class, sorted(policy.transfer_syntaxes))
    ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    handler = VaultRequestHandler if args.reactor == "vault" else RequestHandler
    server = ae.make_server(
        ("127.0.0.1", args.port),
        evt_handlers=[(evt.EVT_C_STORE, _store)],
        server_class=server_class(),
        request_handler=handler,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
