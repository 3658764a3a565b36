"""The upload API: tus 1.0.0 resumable uploads into the one ingest pipeline.

Real embedded vault (SQLite, filesystem store, local key file), the app in
process or under a real uvicorn server where connections must be cut.
Held parts are 64 KiB blocks here so that small files span several.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from dicom_ingest.uploads import sweep_abandoned_uploads
from tests.services.auth_env import BASE_URL
from tests.upload_support import (
    BLOCK,
    TUS,
    Uploader,
    UploadWorld,
    assert_no_plaintext,
    cut_request,
    dicomdir_bytes,
    disk_roots,
    make_app,
    open_request,
    series_bytes,
    served,
    slice_bytes,
    stored_counts,
    upload_settings,
    upload_world,
    zip_bytes,
)
from vault.admin import close_case
from vault.catalog.models import Case, Instance
from vault.catalog.uploads import Upload, UploadFile, UploadInstance
from vault.core import Vault
from vault.reader import open_instance
from vault.retention_jobs import EXPIRE_TASK

WAIT_SECONDS = 30.0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[UploadWorld]:
    with upload_world(tmp_path / "data") as made:
        yield made


@pytest.fixture
def uploader(world: UploadWorld) -> Uploader:
    return world.uploader()


def upload_rows(vault: Vault) -> int:
    with vault.catalog.read_session() as session:
        return len(session.scalars(select(Upload.id)).all())


def read_back(world: UploadWorld, file_url: str) -> bytes:
    """The stored instance of the file at ``file_url``, decrypted."""
    file_id = file_url.rsplit("/", 1)[1]
    query = select(UploadInstance.instance_id).where(UploadInstance.file_id == file_id)
    with world.vault.catalog.read_session() as session:
        (instance_id,) = session.scalars(query).all()
    with open_instance(world.vault, instance_id) as stream:
        return stream.read()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait for the server to reach a state (a guard against hanging, not a timing check)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"the server never reached: {what}")
        time.sleep(0.01)


def write_transactions(vault: Vault, action: Callable[[], object]) -> int:
    """How many write transactions (SQLite ``BEGIN IMMEDIATE``) ``action`` began."""
    begun = [0]

    def on_execute(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        begun[0] += statement.startswith("BEGIN IMMEDIATE")

    event.listen(vault.catalog.engine, "before_cursor_execute", on_execute)
    try:
        action()
    finally:
        event.remove(vault.catalog.engine, "before_cursor_execute", on_execute)
    return begun[0]


def file_offset(world: UploadWorld, file_id: str) -> int:
    with world.vault.catalog.read_session() as session:
        return session.get(UploadFile, file_id).offset


class TestClosedCases:
    def test_a_closed_case_takes_no_new_upload(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        with world.vault.catalog.session() as session:
            close_case(session, session.get(Case, world.case_id))
        before, uploads = stored_counts(world.vault), upload_rows(world.vault)
        headers = uploader.cookie | uploader.csrf
        response = uploader.client.post(
            "/api/uploads", json={"case_id": world.case_id}, headers=headers
        )
        assert response.status_code == 409
        assert response.json()["error"] == "case-closed"
        assert (stored_counts(world.vault), upload_rows(world.vault)) == (before, uploads)
        open_case = world.case_in("Hospital A", "CASE-UP-OPEN")  # the service goes on
        sent = uploader.send(uploader.new_upload(open_case), slice_bytes(3, size=32))
        assert sent.headers["x-vault-outcome"] == "stored"


class TestTusProtocol:
    def test_options_tells_version_extensions_and_maximum_size(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        upload = uploader.new_upload(world.case_id)
        response = uploader.client.options(str(upload["files_url"]), headers=uploader.tus())
        assert response.status_code == 204
        assert response.headers["tus-version"] == "1.0.0"
        assert response.headers["tus-extension"] == "creation,creation-with-upload,termination"
        assert int(response.headers["tus-max-size"]) == world.vault.settings.limits.max_upload_bytes

    def test_a_request_without_tus_resumable_is_refused_with_412(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        upload = uploader.new_upload(world.case_id)
        headers = uploader.cookie | uploader.csrf | {"Upload-Length": "10"}
        response = uploader.client.post(str(upload["files_url"]), headers=headers)
        assert response.status_code == 412
        assert response.headers["tus-version"] == "1.0.0"
        assert response.json()["error"] == "tus-version"

    def test_creation_gives_a_location_whose_head_tells_offset_and_length(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        upload = uploader.new_upload(world.case_id)
        created = uploader.create(upload, 1234)
        assert created.status_code == 201
        assert created.headers["tus-resumable"] == "1.0.0"
        assert created.headers["upload-offset"] == "0"
        location = created.headers["location"]
        assert location.startswith(f"{upload['files_url']}/")
        head = uploader.head(location)
        assert head.status_code == 200
        assert (head.headers["upload-offset"], head.headers["upload-length"]) == ("0", "1234")
        assert head.headers["cache-control"] == "no-store"
        assert head.headers["tus-resumable"] == "1.0.0"

    def test_patch_at_the_wrong_offset_is_409_and_changes_nothing(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        data = slice_bytes()
        upload = uploader.new_upload(world.case_id)
        url = uploader.create(upload, len(data)).headers["location"]
        assert uploader.patch(url, 0, data[:100]).status_code == 204
        response = uploader.patch(url, 50, data[50:])
        assert response.status_code == 409
        assert response.json()["error"] == "offset-mismatch"
        assert response.headers["upload-offset"] == "100"
        assert uploader.head(url).headers["upload-offset"] == "100"

    def test_a_body_that_is_not_offset_octet_stream_is_415_and_never_parsed_as_a_form(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        upload = uploader.new_upload(world.case_id)
        url = uploader.create(upload, 20).headers["location"]
        headers = TUS | uploader.cookie | {"Upload-Offset": "0"}  # no CSRF header
        response = uploader.client.patch(url, headers=headers, data={"csrf_token": "x" * 20})
        assert response.status_code == 415
        assert response.json()["error"] == "media-type"
        assert uploader.head(url).headers["upload-offset"] == "0"

    def test_a_cookie_session_without_the_csrf_header_is_refused(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        upload = uploader.new_upload(world.case_id)
        data = slice_bytes()
        headers = TUS | uploader.cookie | {"Upload-Length": str(len(data))}
        headers["Content-Type"] = "application/offset+octet-stream"
        response = uploader.client.post(str(upload["files_url"]), headers=headers, content=data)
        assert response.status_code == 403
        assert stored_counts(world.vault)["instances"] == 0

    def test_a_file_name_in_the_metadata_is_never_stored(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        name = "Zyxwvut_Quorra_knee.dcm"
        upload = uploader.new_upload(world.case_id)
        response = uploader.send(upload, slice_bytes(), filename=name, kind="dicom")
        assert response.status_code == 201
        uploader.complete(upload)
        assert_no_plaintext(b"Zyxwvut", [Path(world.vault.settings.data_dir)], 0.0)


class TestWholeFiles:
    def test_a_file_sent_in_one_request_is_stored_and_reads_back_bit_exact(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        data = slice_bytes(size=64)
        upload = uploader.new_upload(world.case_id)
        response = uploader.send(upload, data)
        assert response.status_code == 201
        assert response.headers["x-vault-outcome"] == "stored"
        assert response.headers["upload-offset"] == str(len(data))
        url = response.headers["location"]
        assert uploader.result(url) == {
            "state": "stored",
            "offset": len(data),
            "length": len(data),
            "refused": [],
            "stored": 1,
            "duplicates": 0,
        }
        assert read_back(world, url) == data

    def test_a_slice_sent_whole_costs_one_write_transaction_with_its_instance(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        upload = uploader.new_upload(world.case_id)
        uploader.send(upload, slice_bytes(seed=1))  # the study and the key period exist now
        for seed in (2, 3):
            data = slice_bytes(seed=seed)
            writes = write_transactions(world.vault, lambda data=data: uploader.send(upload, data))
            assert writes == 1  # the file's row, its instance's rows and access-log record
        with world.vault.catalog.read_session() as session:
            linked = session.scalars(select(UploadInstance.instance_id)).all()
            instances = session.scalars(select(Instance.id)).all()
        assert sorted(linked) == sorted(instances)

    def test_the_same_file_sent_again_is_a_duplicate(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        data = slice_bytes()
        upload = uploader.new_upload(world.case_id)
        assert uploader.send(upload, data).headers["x-vault-outcome"] == "stored"
        again = uploader.send(upload, data)
        assert again.status_code == 201
        assert again.headers["x-vault-outcome"] == "duplicate"
        assert stored_counts(world.vault)["instances"] == 1

    def test_a_file_sent_in_chunks_is_held_encrypted_until_complete(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        marker = "MARKER-held-3f9c2a"
        data = slice_bytes(size=256, marker=marker)
        assert len(data) > 2 * BLOCK
        started = time.time()
        upload = uploader.new_upload(world.case_id)
        url = uploader.create(upload, len(data)).headers["location"]
        first = 2 * BLOCK + 1000
        assert uploader.patch(url, 0, data[:first]).status_code == 204
        held = stored_counts(world.vault)
        assert (held["held_parts"], held["objects"], held["instances"]) == (3, 3, 0)
        assert_no_plaintext(marker.encode(), disk_roots(world.vault), started)
        last = uploader.patch(url, first, data[first:])
        assert last.status_code == 204
        assert last.headers["x-vault-outcome"] == "stored"
        assert read_back(world, url) == data
        after = stored_counts(world.vault)
        assert (after["held_parts"], after["objects"], after["instances"]) == (0, 1, 1)
        assert after["live_keys"] == 1  # the study's; the spool key was destroyed

    def test_a_large_completing_body_is_held_in_blocks_first(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        world.vault.settings.uploads.direct_max_bytes = BLOCK
        data = slice_bytes(size=256)
        upload = uploader.new_upload(world.case_id)
        response = uploader.send(upload, data)
        assert response.status_code == 201
        assert response.headers["x-vault-outcome"] == "stored"
        assert read_back(world, response.headers["location"]) == data
        assert stored_counts(world.vault)["held_parts"] == 0


class TestResume:
    def test_a_patch_cut_off_keeps_its_whole_blocks_and_the_client_resumes_there(
        self, world: UploadWorld, tmp_path: Path
    ) -> None:
        marker = "MARKER-cut-77ab01"
        data = slice_bytes(size=256, marker=marker)
        world.vault.settings.uploads.direct_max_bytes = BLOCK  # this body is held in blocks
        app = make_app(world.vault.settings, world.settled)
        started = time.time()
        with served(app) as base:
            client = world.uploader(client=httpx.Client(base_url=base))
            upload = client.new_upload(world.case_id)
            url = client.create(upload, len(data)).headers["location"]
            file_id = url.rsplit("/", 1)[1]
            headers = client.tus(Upload_Offset="0") | {
                "Content-Type": "application/offset+octet-stream",
                "Content-Length": str(len(data)),
            }
            sock = open_request(base, "PATCH", url, headers)
            sock.sendall(data[: 2 * BLOCK + 500])
            wait_until(lambda: file_offset(world, file_id) == 2 * BLOCK, "two blocks held")
            sock.close()
            wait_until(lambda: app.state.upload_locks.held() == 0, "the cut request ended")
            head = client.head(url)
            assert head.headers["upload-offset"] == str(2 * BLOCK)
            assert stored_counts(world.vault)["held_parts"] == 2
            assert_no_plaintext(marker.encode(), disk_roots(world.vault), started)
            resumed = client.patch(url, 2 * BLOCK, data[2 * BLOCK :])
            assert resumed.status_code == 204
            assert resumed.headers["x-vault-outcome"] == "stored"
        assert read_back(world, url) == data

    def test_a_whole_file_request_cut_off_keeps_nothing_and_resumes_from_zero(
        self, world: UploadWorld
    ) -> None:
        data = slice_bytes(size=128)
        app = make_app(world.vault.settings, world.settled)
        with served(app) as base:
            client = world.uploader(client=httpx.Client(base_url=base))
            upload = client.new_upload(world.case_id)
            url = client.create(upload, len(data)).headers["location"]
            headers = client.tus(Upload_Offset="0") | {
                "Content-Type": "application/offset+octet-stream"
            }
            cut_request(base, "PATCH", url, headers, data[: len(data) // 2], len(data))
            assert client.head(url).headers["upload-offset"] == "0"
            resumed = client.patch(url, 0, data)
            assert resumed.headers["x-vault-outcome"] == "stored"
        counts = stored_counts(world.vault)
        assert (counts["instances"], counts["objects"], counts["held_parts"]) == (1, 1, 0)
        assert read_back(world, url) == data

    def test_a_newer_request_interrupts_a_stalled_one_for_the_same_file(
        self, world: UploadWorld
    ) -> None:
        data = slice_bytes(size=256)
        world.vault.settings.uploads.direct_max_bytes = BLOCK  # this body is held in blocks
        app = make_app(world.vault.settings, world.settled)
        with served(app) as base:
            client = world.uploader(client=httpx.Client(base_url=base))
            upload = client.new_upload(world.case_id)
            url = client.create(upload, len(data)).headers["location"]
            file_id = url.rsplit("/", 1)[1]
            headers = client.tus(Upload_Offset="0") | {
                "Content-Type": "application/offset+octet-stream",
                "Content-Length": str(len(data)),
            }
            stalled = open_request(base, "PATCH", url, headers)
            stalled.sendall(data[: BLOCK + 10])
            wait_until(lambda: file_offset(world, file_id) == BLOCK, "one block held")
            head = client.head(url)  # would wait forever if it could not interrupt
            assert head.headers["upload-offset"] == str(BLOCK)
            resumed = client.patch(url, BLOCK, data[BLOCK:])
            assert resumed.headers["x-vault-outcome"] == "stored"
            stalled.close()
        assert read_back(world, url) == data

    def test_an_upload_resumes_after_the_app_restarts(self, tmp_path: Path) -> None:
        data = slice_bytes(size=256)
        with upload_world(tmp_path / "data") as first:
            cookie = first.auth.session_cookie(first.clinician)
            name = first.auth.cookie_name
            client = Uploader(first.auth.new_client(), name, cookie)
            upload = client.new_upload(first.case_id)
            url = client.create(upload, len(data)).headers["location"]
            assert client.patch(url, 0, data[: BLOCK + 7]).status_code == 204
        settled: list[str] = []
        app = make_app(upload_settings(tmp_path / "data"), settled)
        with TestClient(app, base_url=BASE_URL) as restarted:
            client = Uploader(restarted, name, cookie)
            offset = int(client.head(url).headers["upload-offset"])
            assert offset == BLOCK + 7
            assert client.patch(url, offset, data[offset:]).headers["x-vault-outcome"] == "stored"
            instance_id = _only_instance(app)
            with open_instance(app.state.vault, instance_id) as stream:
                assert stream.read() == data


def _only_instance(app: FastAPI) -> str:
    with app.state.vault.catalog.read_session() as session:
        (instance_id,) = session.scalars(select(Instance.id)).all()
        return instance_id


class TestTermination:
    def test_a_terminated_file_leaves_nothing_behind(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        marker = "MARKER-term-5e1d"
        data = slice_bytes(size=256, marker=marker)
        started = time.time()
        before = stored_counts(world.vault)
        upload = uploader.new_upload(world.case_id)
        url = uploader.create(upload, len(data)).headers["location"]
        assert uploader.patch(url, 0, data[: 2 * BLOCK]).status_code == 204
        deleted = uploader.client.delete(url, headers=uploader.tus())
        assert deleted.status_code == 204
        assert deleted.headers["tus-resumable"] == "1.0.0"
        assert stored_counts(world.vault) == before
        assert uploader.head(url).status_code == 404
        assert_no_plaintext(marker.encode(), disk_roots(world.vault), started)
        actions = [event.action for event in world.vault.audit.events()]
        assert "upload.file.terminate" in actions

    def test_a_finished_file_cannot_be_terminated(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        upload = uploader.new_upload(world.case_id)
        url = uploader.send(upload, slice_bytes()).headers["location"]
        response = uploader.client.delete(url, headers=uploader.tus())
        assert response.status_code == 409
        assert response.json()["error"] == "upload-closed"
        assert stored_counts(world.vault)["instances"] == 1


class TestArchives:
    def test_each_entry_of_a_zip_is_stored_and_junk_is_skipped(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        entries = {f"CD/DICOM/IM{n}": data for n, data in enumerate(series_bytes(3))}
        entries |= {
            "CD/DICOMDIR": dicomdir_bytes([["DICOM", f"IM{n}"] for n in range(3)]),
            "CD/.DS_Store": b"\0junk",
            "Thumbs.db": b"\0junk",
            "__MACOSX/CD/._IM0": b"\0junk",
        }
        archive = zip_bytes(entries, compress=True)
        upload = uploader.new_upload(world.case_id)
        response = uploader.send_in_chunks(upload, archive, BLOCK // 2, kind="zip")
        assert response.status_code == 204
        assert response.headers["x-vault-outcome"] == "stored"
        result = uploader.result(response.headers["location"])
        assert (result["state"], result["stored"], result["refused"]) == ("stored", 3, [])
        counts = stored_counts(world.vault)
        assert (counts["instances"], counts["held_parts"], counts["objects"]) == (3, 0, 3)

    def test_a_zip_with_a_refused_entry_is_partial_and_names_the_entry(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        archive = zip_bytes(
            {"a.dcm": slice_bytes(0), "report.pdf": b"%PDF-1.7", "b.dcm": slice_bytes(1)}
        )
        upload = uploader.new_upload(world.case_id)
        response = uploader.send(upload, archive, kind="zip")
        assert response.status_code == 201
        assert response.headers["x-vault-outcome"] == "partial"
        result = uploader.result(response.headers["location"])
        assert result["stored"] == 2
        assert result["refused"] == [
            {"entry": 1, "error": "not-dicom", "detail": result["refused"][0]["detail"]}
        ]
        assert result["refused"][0]["detail"]


class TestCompletion:
    def test_completion_settles_the_studies_and_tells_the_hooks(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        upload = uploader.new_upload(world.case_id)
        for data in series_bytes(3):
            assert uploader.send(upload, data).status_code == 201
        response = uploader.complete(upload)
        assert response.status_code == 200
        body = response.json()
        assert body["state"] == "complete"
        assert len(body["studies"]) == 1
        assert world.settled == body["studies"]
        status = uploader.get(f"/api/uploads/{upload['upload_id']}").json()
        assert status["state"] == "complete"
        assert status["files"]["stored"] == 3
        again = uploader.complete(upload)
        assert again.json()["studies"] == body["studies"]
        assert world.settled == body["studies"]  # settled once

    def test_completion_discards_files_still_arriving_and_closes_the_upload(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        data = slice_bytes(size=256)
        upload = uploader.new_upload(world.case_id)
        url = uploader.create(upload, len(data)).headers["location"]
        uploader.patch(url, 0, data[: BLOCK + 1])
        assert uploader.complete(upload).status_code == 200
        counts = stored_counts(world.vault)
        assert (counts["held_parts"], counts["objects"], counts["receiving"]) == (0, 0, 0)
        late = uploader.send(upload, slice_bytes())
        assert late.status_code == 409
        assert late.json()["error"] == "upload-closed"

    def test_a_reloaded_page_finds_its_open_upload_and_no_one_elses(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        mine = uploader.new_upload(world.case_id)
        colleague = world.auth.add_user("clin2@a.example", "clinician", "Hospital A")
        theirs = world.uploader(colleague)
        theirs.new_upload(world.case_id)
        listed = uploader.get("/api/uploads", case_id=world.case_id).json()
        assert [item["upload_id"] for item in listed] == [mine["upload_id"]]
        assert theirs.get(f"/api/uploads/{mine['upload_id']}").status_code == 404
        assert theirs.create(mine, 10).status_code == 404

    def test_a_case_of_another_hospital_cannot_take_uploads(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        other_case = world.case_in("Hospital B", "CASE-B-9")
        headers = uploader.cookie | uploader.csrf
        response = uploader.client.post(
            "/api/uploads", json={"case_id": other_case}, headers=headers
        )
        assert response.status_code == 404

    def test_the_access_log_records_the_upload_without_phi(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        upload = uploader.new_upload(world.case_id)
        uploader.send(upload, slice_bytes(), filename="Zyxwvut.dcm")
        uploader.complete(upload)
        events = [e for e in world.vault.audit.events() if e.action.startswith("upload.")]
        assert [e.action for e in events] == ["upload.create", "upload.complete"]
        complete = json.loads(events[1].detail)
        assert (complete["stored"], complete["studies"]) == (1, 1)
        assert events[1].actor == f"user:{world.clinician.user_id}"
        assert all("Zyxwvut" not in e.detail for e in world.vault.audit.events())
        assert world.vault.audit.verify() == []


class TestSweep:
    def test_an_abandoned_upload_is_swept_after_its_idle_time(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        data = slice_bytes(size=256)
        upload = uploader.new_upload(world.case_id)
        url = uploader.create(upload, len(data)).headers["location"]
        uploader.patch(url, 0, data[: BLOCK + 1])
        assert sweep_abandoned_uploads(world.vault) == 0
        idle = world.vault.settings.uploads.abandon_after_hours
        world.auth.clock.advance(timedelta(hours=idle + 1))
        assert sweep_abandoned_uploads(world.vault) == 1
        counts = stored_counts(world.vault)
        assert (counts["held_parts"], counts["objects"], counts["live_keys"]) == (0, 0, 0)
        with world.vault.catalog.read_session() as session:
            assert session.get(Upload, str(upload["upload_id"])).state == "abandoned"
        assert "upload.abandon" in [e.action for e in world.vault.audit.events()]

    def test_the_daily_expiry_job_sweeps_abandoned_uploads(
        self, world: UploadWorld, uploader: Uploader
    ) -> None:
        from deidentify.tasks import create_celery_app

        upload = uploader.new_upload(world.case_id)
        url = uploader.create(upload, 5 * BLOCK).headers["location"]
        uploader.patch(url, 0, bytes(BLOCK))
        world.auth.clock.advance(
            timedelta(hours=world.vault.settings.uploads.abandon_after_hours + 1)
        )
        app = create_celery_app(world.vault.settings, vault=world.vault)
        assert app.tasks[EXPIRE_TASK].delay().get() == {"expired": 0}
        with world.vault.catalog.read_session() as session:
            assert session.get(Upload, str(upload["upload_id"])).state == "abandoned"
        assert stored_counts(world.vault)["held_parts"] == 0
