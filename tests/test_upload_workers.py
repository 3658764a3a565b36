"""The upload API under several worker processes (``api.workers`` > 1).

The README suggests one worker per core for several uploaders at once; the
tus resumption must then hold whichever worker takes each request.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from tests.services.dicom_peers import free_port
from tests.services.vault_server import clinician_session, wait_until_healthy
from tests.upload_support import Uploader, series_bytes
from vault.core import open_vault
from vault.settings import Settings

CLI = Path(sys.executable).with_name("dicom-vault")
BLOCK = 64 * 1024
WORKERS = 2


# On PYTHONPATH, it delays every process but the first (``serve`` itself) as a
# slow import would: uvicorn's worker processes answer its health pings only
# once they have imported the service.
_SLOW_START = """\
import os, time
if os.environ.get("DV_TEST_SLOW_START"):
    if os.environ.get("DV_TEST_SLOW_PARENT") is None:
        os.environ["DV_TEST_SLOW_PARENT"] = str(os.getpid())
    else:
        time.sleep(float(os.environ["DV_TEST_SLOW_START"]))
"""


@contextmanager
def _served(
    root: Path, *, stderr: Path | None = None, **extra_env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        **os.environ,
        "DICOM_VAULT_DATA_DIR": str(root),
        "DICOM_VAULT_AUTH__COOKIE_SECURE": "false",
        "DICOM_VAULT_API__WORKERS": str(WORKERS),
        "DICOM_VAULT_UPLOADS__BLOCK_BYTES": str(BLOCK),
    }
    argv = [str(CLI), "serve", "--no-scp", "--host", "127.0.0.1", "--port", str(port)]
    env.pop("DICOM_VAULT_CONFIG", None)
    env.update(extra_env)
    with stderr.open("wb") if stderr else open(os.devnull, "wb") as err:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=60)


class TestSeveralApiWorkers:
    def test_concurrent_files_and_a_resumed_one_are_all_stored_across_workers(
        self, tmp_path: Path
    ) -> None:
        root = tmp_path / "var"
        name, cookie, case_id = clinician_session(root, "Workers Hospital", "CASE-WORKERS")
        slices = series_bytes(9, size=256, seed=7)
        whole, resumed = slices[:8], slices[8]
        with _served(root) as (base, process):
            workers = psutil.Process(process.pid).children()

            def uploader() -> Uploader:  # a connection of its own: any worker may take it
                return Uploader(httpx.Client(base_url=base, timeout=60), name, cookie)

            upload = uploader().new_upload(case_id)

            def send(data: bytes) -> str | None:
                return uploader().send(upload, data).headers.get("x-vault-outcome")

            with ThreadPoolExecutor(4) as pool:
                outcomes = list(pool.map(send, whole))
            url = uploader().create(upload, len(resumed)).headers["location"]
            first = uploader().patch(url, 0, resumed[: BLOCK + 7]).status_code
            offset = int(uploader().head(url).headers["upload-offset"])
            last = uploader().patch(url, offset, resumed[offset:]).headers.get("x-vault-outcome")
            reader = uploader()
            state = reader.client.get(f"/api/uploads/{upload['upload_id']}", headers=reader.cookie)
        assert len(workers) >= WORKERS
        assert outcomes == ["stored"] * len(whole)
        assert (first, offset, last) == (204, BLOCK + 7, "stored")
        vault = open_vault(Settings(data_dir=root))
        try:
            assert vault.audit.verify() == []
        finally:
            vault.close()
        assert state.json()["files"].get("stored") == len(slices), state.text

    def test_workers_slower_to_start_than_uvicorns_default_ping_are_waited_for(
        self, tmp_path: Path
    ) -> None:
        """A restarted API on a busy machine: each new worker takes 8 s to import,
        more than uvicorn's default 5 s health ping; they were killed and
        replaced at once, for ever, and the API never answered again."""
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(_SLOW_START)
        path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        log = tmp_path / "serve.log"
        root = tmp_path / "var"
        open_vault(Settings(data_dir=root)).close()  # the catalog made before the clock runs
        slow = {"PYTHONPATH": path, "DV_TEST_SLOW_START": "8"}
        with _served(root, stderr=log, **slow) as (base, _process):
            answer = httpx.get(f"{base}/healthz", timeout=10).status_code
        text = log.read_text()
        assert answer == 200
        assert "died" not in text, text[-2000:]
