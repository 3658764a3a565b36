"""An ASGI app under a real uvicorn server in a thread on a free port, for tests.

For tests that need what only a real server does: a browser, cut
connections, a client that sees what a client sees.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi import FastAPI

SERVER_WAIT_SECONDS = 30.0  # a hang guard only: nothing asserts on time


@contextmanager
def serving_app(app: FastAPI, log_level: str = "warning") -> Iterator[str]:
    """``app`` under a real uvicorn server in a thread; its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + SERVER_WAIT_SECONDS
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            pytest.fail("the test server did not start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(SERVER_WAIT_SECONDS)
        sock.close()
