"""The upload page's routes: the pages, the series summary and the thumbnails.

Files are sent through the upload API (tus) by a logged-in clinician into a
real embedded vault (see :mod:`tests.upload_support`); the summary and the
thumbnails are then read back the way the page reads them.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless
from sqlalchemy import select

from dicom_ingest.synthetic import encode, make_ct_series
from tests.upload_support import Uploader, UploadWorld, upload_world
from vault.catalog.models import AuditEvent

SMALL = {"rows": 32, "columns": 32}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[UploadWorld]:
    with upload_world(tmp_path / "data") as made:
        yield made


def _send_series(
    uploader: Uploader, upload: dict[str, object], datasets: Iterable[Dataset]
) -> None:
    for ds in datasets:
        response = uploader.send(upload, encode(ds))
        assert response.status_code == 201, response.text


def _audit(world: UploadWorld, action: str) -> list[AuditEvent]:
    with world.vault.catalog.read_session() as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        return list(session.scalars(query))


class TestSummaryApi:
    def test_the_uploader_sees_the_series_a_thumbnail_and_the_warnings(
        self, world: UploadWorld
    ) -> None:
        uploader = world.uploader()
        upload = uploader.new_upload(world.case_id)
        _send_series(uploader, upload, make_ct_series(5, slice_thickness=2.0, **SMALL))
        response = uploader.get(f"/api/uploads/{upload['upload_id']}/summary")
        assert response.status_code == 200, response.text
        body = response.json()
        [series] = body["series"]
        assert series["modality"] == "CT" and series["description"] == "AXIAL 2MM"
        assert (series["images"], series["slice_thickness_mm"]) == (5, 2.0)
        assert series["pixel_spacing_mm"] == [pytest.approx(350 / 32)] * 2
        assert series["identity"] == {
            "initials": "M. Q.",
            "birth_date": "1961-03-14",
            "sex": "F",
            "study_date": "2023-05-17",
        }
        assert response.headers["cache-control"] == "no-store"  # it names the patient
        assert [(w["code"], w["series_id"]) for w in body["warnings"]] == [
            ("slice-thickness", series["series_id"])
        ]
        thumbnail = uploader.get(series["thumbnail_url"])
        assert thumbnail.status_code == 200
        assert thumbnail.headers["content-type"] == "image/png"
        assert thumbnail.headers["cache-control"] == "no-store"  # an original's image
        assert Image.open(io.BytesIO(thumbnail.content)).size == (32, 32)

    def test_both_reads_are_in_the_access_log_without_the_description(
        self, world: UploadWorld
    ) -> None:
        uploader = world.uploader()
        upload = uploader.new_upload(world.case_id)
        _send_series(uploader, upload, make_ct_series(3, **SMALL))
        body = uploader.get(f"/api/uploads/{upload['upload_id']}/summary").json()
        uploader.get(body["series"][0]["thumbnail_url"])
        [summary] = _audit(world, "series.metadata")
        assert (summary.actor, summary.object_id) == (
            f"user:{world.clinician.user_id}",
            upload["upload_id"],
        )
        assert json.loads(summary.detail) == {"series": 1, "instances": 3}
        [read] = _audit(world, "instance.read")
        assert read.object_type == "instance" and read.outcome == "success"
        for event in (summary, read):
            assert "AXIAL" not in event.detail
            assert "M. Q." not in event.detail and "1961" not in event.detail

    def test_another_clinicians_upload_is_not_found(self, world: UploadWorld) -> None:
        uploader = world.uploader()
        upload = uploader.new_upload(world.case_id)
        _send_series(uploader, upload, make_ct_series(3, **SMALL))
        body = uploader.get(f"/api/uploads/{upload['upload_id']}/summary").json()
        colleague = world.auth.add_user("colleague@a.example", "clinician", "Hospital A")
        elsewhere = world.auth.add_user("clin@b.example", "clinician", "Hospital B")
        for account in (colleague, elsewhere):
            other = world.uploader(account)
            summary = other.get(f"/api/uploads/{upload['upload_id']}/summary")
            assert (summary.status_code, summary.json()["error"]) == (404, "not-found")
            assert other.get(body["series"][0]["thumbnail_url"]).status_code == 404

    def test_an_unknown_upload_or_series_is_not_found(self, world: UploadWorld) -> None:
        uploader = world.uploader()
        upload = uploader.new_upload(world.case_id)
        _send_series(uploader, upload, make_ct_series(2, **SMALL))
        upload_id = upload["upload_id"]
        assert uploader.get("/api/uploads/0123456789abcdef/summary").status_code == 404
        missing = uploader.get(f"/api/uploads/{upload_id}/series/{'0' * 32}/thumbnail.png")
        assert missing.status_code == 404

    def test_an_image_that_cannot_be_previewed_is_told_in_plain_words(
        self, world: UploadWorld
    ) -> None:
        ds = next(make_ct_series(1, **SMALL))
        ds.file_meta.TransferSyntaxUID = RLELossless
        ds.PixelData = encapsulate([b"\x00" * 64])  # stored, but not decodable
        ds["PixelData"].VR = "OB"
        uploader = world.uploader()
        upload = uploader.new_upload(world.case_id)
        _send_series(uploader, upload, [ds])
        body = uploader.get(f"/api/uploads/{upload['upload_id']}/summary").json()
        response = uploader.get(body["series"][0]["thumbnail_url"])
        assert response.status_code == 422
        assert response.json() == {
            "error": "no-preview",
            "detail": "the image encoding cannot be previewed",
        }
        assert [e.outcome for e in _audit(world, "instance.read")] == ["no-preview"]
        assert uploader.get("/healthz").status_code == 200


class TestPages:
    def test_the_case_picker_lists_the_cases_the_clinician_may_upload_to(
        self, world: UploadWorld
    ) -> None:
        elsewhere = world.case_in("Hospital B", "CASE-ELSEWHERE")
        page = world.uploader().get("/upload")
        assert page.status_code == 200
        assert f'href="/cases/{world.case_id}/upload"' in page.text
        assert elsewhere not in page.text

    def test_the_home_page_links_each_open_case_to_its_upload_page(
        self, world: UploadWorld
    ) -> None:
        page = world.uploader().get("/")
        assert page.status_code == 200
        assert f'href="/cases/{world.case_id}/upload"' in page.text

    def test_the_case_page_links_back_through_the_login_when_the_session_ends(
        self, world: UploadWorld
    ) -> None:
        page = world.uploader().get(f"/cases/{world.case_id}/upload")
        assert f'href="/login?next=/cases/{world.case_id}/upload"' in page.text

    def test_the_case_page_carries_its_settings_and_loads_only_local_scripts(
        self, world: UploadWorld
    ) -> None:
        uploader = world.uploader()
        page = uploader.get(f"/cases/{world.case_id}/upload")
        assert page.status_code == 200
        assert f'data-case-id="{world.case_id}"' in page.text
        assert f'data-csrf="{uploader.csrf["X-CSRF-Token"]}"' in page.text
        assert 'data-chunk-bytes="4194304"' in page.text and 'data-parallel="4"' in page.text
        assert '<script type="module" src="/static/upload.js"></script>' in page.text
        assert "<script>" not in page.text and "style=" not in page.text
        assert "webkitdirectory" in page.text

    def test_a_case_of_another_hospital_is_not_found(self, world: UploadWorld) -> None:
        elsewhere = world.case_in("Hospital B", "CASE-ELSEWHERE")
        assert world.uploader().get(f"/cases/{elsewhere}/upload").status_code == 404

    def test_every_module_the_page_imports_is_served_from_static(self, world: UploadWorld) -> None:
        client = world.uploader()
        main = client.get("/static/upload.js")
        assert main.status_code == 200
        imported = re.findall(r'from "\./([\w.-]+)"', main.text)
        assert imported, "upload.js imports its modules"
        for name in [*imported, "upload.css"]:
            response = client.get(f"/static/{name}")
            assert response.status_code == 200, name
            assert "http://" not in response.text and "https://" not in response.text  # no CDN
