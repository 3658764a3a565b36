"""Shared pieces of the upload API tests: a logged-in clinician, tus calls, checks.

:class:`UploadWorld` is the app (real embedded vault, FrozenClock) with a
clinician of "Hospital A", one open case of theirs, and a recorder of the
studies that settle. :class:`Uploader` speaks tus to it (session cookie and
``X-CSRF-Token``), through the in-process test client or a real server.
:func:`served` runs the app under a real uvicorn server in a thread, for
tests that cut connections; :func:`cut_request` sends part of a body on a
raw socket. :func:`stored_counts` and :func:`assert_no_plaintext` are what a
refusal test checks: nothing stored, no plaintext on disk.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import func, select

from dicom_ingest.synthetic import encode, make_ct_series
from tests.services.auth_env import BASE_URL, START, Account, AuthWorld, auth_test_settings
from tests.services.http_server import serving_app
from vault.admin import create_case, get_or_create_organisation
from vault.api.app import create_app
from vault.auth.sessions import csrf_token
from vault.catalog.models import DataKeyRecord, Instance, Study
from vault.catalog.uploads import UploadFile, UploadPart
from vault.clock import FrozenClock
from vault.core import Vault
from vault.settings import Settings, UploadSettings
from vault.settle import StudySettledHooks

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = {"Content-Type": "application/offset+octet-stream"}
BLOCK = 64 * 1024


def upload_settings(data_dir: Path) -> Settings:
    """Test settings: cheap argon2, plain-http cookies, 64 KiB held blocks."""
    settings = auth_test_settings(data_dir, cookie_secure=False)
    settings.uploads = UploadSettings(block_bytes=BLOCK)
    return settings


def slice_bytes(
    seed: int = 0, *, size: int = 32, marker: str | None = None, **kwargs: object
) -> bytes:
    """One synthetic CT slice (``size`` x ``size``), with ``marker`` in ImageComments."""
    ds = next(make_ct_series(1, rows=size, columns=size, seed=seed, **kwargs))  # type: ignore[arg-type]
    if marker is not None:
        ds.ImageComments = marker
    return encode(ds)


def series_bytes(count: int, *, size: int = 32, seed: int = 0) -> list[bytes]:
    """``count`` slices of one synthetic CT series (one study)."""
    return [encode(ds) for ds in make_ct_series(count, rows=size, columns=size, seed=seed)]


def zip_bytes(entries: dict[str, bytes], *, compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def dicomdir_bytes(paths: list[list[str]], *, marker: str | None = None) -> bytes:
    """A DICOMDIR whose image records point at ``paths`` (lists of path components).

    ``marker`` is put in a patient record, as a real DICOMDIR names its patients.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # '..' is not a valid CS value: that is the point
        return _dicomdir(paths, marker)


def _dicomdir(paths: list[list[str]], marker: str | None) -> bytes:
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.FileSetID = "TESTSET"
    records = []
    for path in paths:
        record = Dataset()
        record.DirectoryRecordType = "IMAGE"
        record.ReferencedFileID = path
        records.append(record)
    if marker is not None:
        patient = Dataset()
        patient.DirectoryRecordType = "PATIENT"
        patient.PatientName = marker
        records.insert(0, patient)
    ds.DirectoryRecordSequence = records
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


class Uploader:
    """A clinician's tus client: JSON calls and tus requests with cookie and CSRF.

    The session cookie goes in an explicit ``Cookie`` header, so the same
    client works in process and against a real server on 127.0.0.1.
    """

    def __init__(self, client: httpx.Client | TestClient, cookie_name: str, cookie: str) -> None:
        self.client = client
        self.cookie = {"Cookie": f"{cookie_name}={cookie}"}
        self.csrf = {"X-CSRF-Token": csrf_token(cookie)}

    def tus(self, **extra: str) -> dict[str, str]:
        named = {k.replace("_", "-"): v for k, v in extra.items()}
        return {**TUS, **self.cookie, **self.csrf, **named}

    def new_upload(self, case_id: str) -> dict[str, object]:
        headers = self.cookie | self.csrf
        response = self.client.post("/api/uploads", json={"case_id": case_id}, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()

    def create(
        self, upload: dict[str, object], length: int, *, body: bytes | None = None, **meta: str
    ) -> httpx.Response:
        headers = self.tus(Upload_Length=str(length))
        if meta:
            headers["Upload-Metadata"] = metadata(**meta)
        if body is not None:
            headers |= OFFSET_STREAM
        return self.client.post(str(upload["files_url"]), headers=headers, content=body)

    def send(self, upload: dict[str, object], data: bytes, **meta: str) -> httpx.Response:
        """One whole file in one request (creation-with-upload)."""
        return self.create(upload, len(data), body=data, **meta)

    def patch(self, url: str, offset: int, body: bytes) -> httpx.Response:
        headers = self.tus(Upload_Offset=str(offset)) | OFFSET_STREAM
        return self.client.patch(url, headers=headers, content=body)

    def send_in_chunks(
        self, upload: dict[str, object], data: bytes, chunk: int, **meta: str
    ) -> httpx.Response:
        """Create the file, then PATCH it ``chunk`` bytes at a time; the last answer."""
        created = self.create(upload, len(data), **meta)
        assert created.status_code == 201, created.text
        url = created.headers["location"]
        response = created
        for offset in range(0, len(data), chunk):
            response = self.patch(url, offset, data[offset : offset + chunk])
            if response.status_code != 204:
                break
        response.headers["location"] = url
        return response

    def head(self, url: str) -> httpx.Response:
        return self.client.head(url, headers=self.tus())

    def result(self, url: str) -> dict[str, object]:
        response = self.client.get(f"{url}/result", headers=self.cookie)
        assert response.status_code == 200, response.text
        return response.json()

    def complete(self, upload: dict[str, object]) -> httpx.Response:
        path = f"/api/uploads/{upload['upload_id']}/complete"
        return self.client.post(path, headers=self.cookie | self.csrf)

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.client.get(path, headers=self.cookie, params=params)


@dataclass
class UploadWorld:
    """The app with a clinician, their case and a recorder of settled studies."""

    auth: AuthWorld
    clinician: Account
    case_id: str
    settled: list[str] = field(default_factory=list)

    @property
    def vault(self) -> Vault:
        return self.auth.vault

    def uploader(
        self, account: Account | None = None, client: httpx.Client | None = None
    ) -> Uploader:
        """A client for ``account`` (the clinician), in process unless ``client`` is given."""
        cookie = self.auth.session_cookie(account or self.clinician)
        return Uploader(client or self.auth.new_client(), self.auth.cookie_name, cookie)

    def case_in(self, organisation: str, reference: str) -> str:
        with self.vault.catalog.session() as session:
            org = get_or_create_organisation(session, organisation)
            return create_case(session, reference, org).id


def make_app(settings: Settings, settled: list[str]) -> FastAPI:
    hooks = StudySettledHooks()
    hooks.register(settled.append)
    return create_app(settings, clock=FrozenClock(START), settle_hooks=hooks)


@contextmanager
def upload_world(data_dir: Path, catalog_url: str | None = None) -> Iterator[UploadWorld]:
    """The upload app on the embedded catalog, or on the catalog at ``catalog_url``."""
    settled: list[str] = []
    settings = upload_settings(data_dir)
    if catalog_url:
        settings.catalog.url = catalog_url
    app = make_app(settings, settled)
    with TestClient(app, base_url=BASE_URL) as client:
        auth = AuthWorld(client, app.state.vault.clock)
        clinician = auth.add_user("clin@a.example", "clinician", "Hospital A")
        world = UploadWorld(auth, clinician, "", settled)
        world.case_id = world.case_in("Hospital A", "CASE-UP-1")
        yield world


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` under a real uvicorn server in a thread; its base URL."""
    with serving_app(app) as url:
        yield url


def open_request(base_url: str, method: str, path: str, headers: dict[str, str]) -> socket.socket:
    """A raw HTTP/1.1 request with its headers sent and its body not yet."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def cut_request(
    base_url: str, method: str, path: str, headers: dict[str, str], sent: bytes, declared: int
) -> None:
    """Declare ``declared`` body bytes, send only ``sent``, and close the connection."""
    sock = open_request(base_url, method, path, headers | {"Content-Length": str(declared)})
    sock.sendall(sent)
    sock.close()


def stored_counts(vault: Vault) -> dict[str, int]:
    """What the vault holds: catalog rows, live data keys, held parts, store objects."""
    with vault.catalog.read_session() as session:

        def count(model: type, *where: object) -> int:
            return int(session.scalar(select(func.count()).select_from(model).where(*where)))

        counts = {
            "studies": count(Study),
            "instances": count(Instance),
            "live_keys": count(DataKeyRecord, DataKeyRecord.wrapped.is_not(None)),
            "held_parts": count(UploadPart),
            "receiving": count(UploadFile, UploadFile.state == "receiving"),
        }
    counts["objects"] = len(list(vault.store.iter_keys()))
    return counts


# File timestamps come from the kernel's coarse clock, which lags ``time.time()``
# by up to a scheduler tick: a file written just after ``since`` can carry an
# earlier mtime. Looking a second further back keeps such a file in the scan.
MTIME_SLACK_SECONDS = 1.0


def files_since(roots: list[Path], since: float) -> Iterator[Path]:
    since -= MTIME_SLACK_SECONDS
    for root in roots:
        for directory, _dirs, names in os.walk(root):
            for name in names:
                path = Path(directory, name)
                try:
                    status = path.stat()
                except OSError:
                    continue
                if status.st_mtime >= since and status.st_size < 64 * 1024 * 1024:
                    yield path


def assert_no_plaintext(marker: bytes, roots: list[Path], since: float) -> None:
    """No file written since ``since`` under ``roots`` holds ``marker``."""
    leaked = []
    for path in files_since(roots, since):
        try:
            if marker in path.read_bytes():
                leaked.append(path)
        except OSError:
            continue
    assert leaked == []


def disk_roots(vault: Vault) -> list[Path]:
    """The vault's data directory and the system temporary directory (each once)."""
    temp = Path(tempfile.gettempdir()).resolve()
    data = Path(vault.settings.data_dir).resolve()
    return [temp] if data.is_relative_to(temp) else [data, temp]
