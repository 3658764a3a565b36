"""How the receiver reads a PDU off its socket: memory follows the bytes that arrive."""

from __future__ import annotations

import socket
import threading
import tracemalloc

from dicom_ingest._scp_reactor import _read_growing


def test_a_pdu_announced_huge_reserves_only_what_arrives() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        peer.sendall(b"x" * 1000)
        peer.close()
        tracemalloc.start()
        try:
            data = _read_growing(ours, 512 << 20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert data == b"x" * 1000
    assert peak < 4 << 20  # not the 512 MiB announced


def test_a_pdu_larger_than_the_first_read_arrives_whole() -> None:
    ours, peer = socket.socketpair()
    payload = bytes(range(256)) * (3 << 12)  # 3 MiB, over the 1 MiB first read
    sender = threading.Thread(target=peer.sendall, args=(payload,))
    with ours, peer:
        sender.start()
        data = _read_growing(ours, len(payload))
        sender.join()
    assert data == payload
