"""The engineers' REST API: listings, metadata, study and series ZIPs, single instances.

Covers what each route answers (bodies, statuses, headers), conditional and
range requests (304, 206, If-Range, 416) with resumed downloads equal to the
whole one, refusals (another engineer's case, unfinished studies, tokens
bound to another case, other roles), tampered objects and the access log.
The world (see :mod:`tests.engineer_support`) holds one finished study
(two series and a held-back burned-in capture) in a case assigned to one
engineer, and a queued study in the same case. Tests that tamper with stored
objects make studies of their own; the aborted-transfer test runs the app
under a real uvicorn server so that the client sees what a client sees.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator

import httpx
import pydicom
import pytest

from dicom_ingest.synthetic import SyntheticPatient
from tests.engineer_support import (
    World,
    assign,
    engineer_world,
    events,
    ingest,
    instance_rows,
    pseudonymise,
    served_rows,
    serving,
    tamper,
    two_series,
)
from tests.services.vault_env import make_case


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with engineer_world(tmp_path_factory.mktemp("downloads") / "data", "DL-CASE") as built:
        yield built


def archive_of(
    world: World, pseudo_study_id: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return world.client.get(
        f"/api/engineer/studies/{pseudo_study_id}/archive",
        headers={**world.bearer(), **(headers or {})},
    )


def instance_bytes(world: World, pseudo_instance_id: str) -> bytes:
    response = world.client.get(
        f"/api/engineer/instances/{pseudo_instance_id}", headers=world.bearer()
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    return response.content


# --- the tests ----------------------------------------------------------------


class TestStudyListing:
    def test_lists_the_callers_studies_with_series_and_counts(self, world: World) -> None:
        response = world.client.get("/api/engineer/studies", headers=world.bearer())
        assert response.status_code == 200
        listed = {study["pseudo_study_id"]: study for study in response.json()}
        done, queued = listed[world.study], listed[world.queued]
        assert done["case_reference"] == "DL-CASE-1"
        assert done["pseudonym"].startswith("PSN-")
        assert (done["state"], done["instance_count"], done["quarantined_count"]) == ("done", 5, 1)
        assert sorted(s["instance_count"] for s in done["series"]) == [2, 3]
        assert all(s["pseudo_series_uid"].startswith("2.25.") for s in done["series"])
        assert (queued["state"], queued["series"]) == ("queued", [])

    def test_another_engineer_lists_none_of_this_case(self, world: World) -> None:
        client = world.as_user(world.other_engineer)
        response = client.get("/api/engineer/studies")
        assert response.status_code == 200
        assert response.json() == []


class TestStudyArchive:
    def test_every_member_reads_with_pydicom_and_equals_the_instance_download(
        self, world: World
    ) -> None:
        response = archive_of(world, world.study)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        rows = [row for row in instance_rows(world.vault, world.study) if row.state == "done"]
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert archive.testzip() is None
            members = {info.filename: archive.read(info) for info in archive.infolist()}
        assert len(members) == len(rows) == 5
        for row in rows:
            data = members[f"{row.pseudo_series_uid}/{row.pseudo_sop_uid}.dcm"]
            assert data == instance_bytes(world, row.id)
            dataset = pydicom.dcmread(io.BytesIO(data))
            assert dataset.SOPInstanceUID == row.pseudo_sop_uid
            assert dataset.SeriesInstanceUID == row.pseudo_series_uid

    def test_quarantined_instance_is_neither_zipped_nor_served(self, world: World) -> None:
        (held,) = [r for r in instance_rows(world.vault, world.study) if r.state == "quarantined"]
        response = archive_of(world, world.study)
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            names = archive.namelist()
        assert len(names) == 5
        assert not any(held.source_instance_id in name for name in names)
        single = world.client.get(f"/api/engineer/instances/{held.id}", headers=world.bearer())
        assert single.status_code == 404

    def test_archive_is_deterministic_with_a_stable_etag_and_exact_length(
        self, world: World
    ) -> None:
        first, second = archive_of(world, world.study), archive_of(world, world.study)
        assert first.content == second.content
        assert first.headers["etag"] == second.headers["etag"]
        assert int(first.headers["content-length"]) == len(first.content)

    def test_members_are_stored_uncompressed(self, world: World) -> None:
        with zipfile.ZipFile(io.BytesIO(archive_of(world, world.study).content)) as archive:
            assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


class TestRefusals:
    @pytest.mark.parametrize("route", ["archive", "instance"])
    def test_another_engineers_case_answers_404(self, world: World, route: str) -> None:
        client = world.as_user(world.other_engineer)
        row = instance_rows(world.vault, world.study)[0]
        path = {
            "archive": f"/api/engineer/studies/{world.study}/archive",
            "instance": f"/api/engineer/instances/{row.id}",
        }[route]
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"] == "not-found"

    def test_another_engineers_instance_answers_as_an_unknown_one(self, world: World) -> None:
        client = world.as_user(world.other_engineer)
        row = instance_rows(world.vault, world.study)[0]
        theirs = client.get(f"/api/engineer/instances/{row.id}")
        unknown = client.get(f"/api/engineer/instances/{'0' * 32}")
        assert (theirs.status_code, theirs.json()) == (unknown.status_code, unknown.json())

    def test_token_bound_to_another_case_answers_404(self, world: World) -> None:
        other = make_case(world.vault, "DL-CASE-3")
        assign(world.vault, other.case_id, world.engineer)
        secret = world.auth.token(world.engineer, case_id=other.case_id)
        response = world.client.get(
            f"/api/engineer/studies/{world.study}/archive", headers=world.bearer(secret)
        )
        assert response.status_code == 404

    def test_unknown_study_answers_404(self, world: World) -> None:
        assert archive_of(world, "0" * 32).status_code == 404

    def test_unfinished_study_answers_409_with_its_state(self, world: World) -> None:
        response = archive_of(world, world.queued)
        assert response.status_code == 409
        assert response.json()["error"] == "not-ready"
        assert "queued" in response.json()["detail"]

    @pytest.mark.parametrize("role", ["clinician", "admin"])
    def test_clinician_and_admin_cannot_use_the_routes(self, world: World, role: str) -> None:
        client = world.as_user(getattr(world, role))
        row = instance_rows(world.vault, world.study)[0]
        for path in (
            "/api/engineer/studies",
            f"/api/engineer/studies/{world.study}/archive",
            f"/api/engineer/instances/{row.id}",
        ):
            assert client.get(path).status_code == 403, path


class TestTamperedObjects:
    def test_tampered_instance_answers_an_error_never_its_bytes(self, world: World) -> None:
        study = pseudonymise(world.vault, ingest(world.case, two_series(seed=11, slices=(1, 1))))
        row = instance_rows(world.vault, study)[0]
        tamper(world.vault, row)
        response = world.client.get(f"/api/engineer/instances/{row.id}", headers=world.bearer())
        assert response.status_code == 500
        assert response.json()["error"] == "integrity"

    def test_tampered_first_member_answers_an_error_before_any_data(self, world: World) -> None:
        study = pseudonymise(world.vault, ingest(world.case, two_series(seed=12, slices=(1, 1))))
        rows = sorted(
            instance_rows(world.vault, study), key=lambda r: (r.pseudo_series_uid, r.pseudo_sop_uid)
        )
        tamper(world.vault, rows[0])
        response = archive_of(world, study)
        assert response.status_code == 500
        assert response.json()["error"] == "integrity"

    def test_tampered_member_mid_stream_aborts_the_transfer(self, world: World) -> None:
        datasets = two_series(seed=13, slices=(3, 1), size=512)  # over one 1 MiB chunk
        study = pseudonymise(world.vault, ingest(world.case, datasets))
        rows = sorted(
            instance_rows(world.vault, study), key=lambda r: (r.pseudo_series_uid, r.pseudo_sop_uid)
        )
        tamper(world.vault, rows[-1])
        received = bytearray()
        with serving(world.vault) as base_url, httpx.Client(base_url=base_url) as client:
            path = f"/api/engineer/studies/{study}/archive"
            with client.stream("GET", path, headers=world.bearer()) as response:
                assert response.status_code == 200
                expected = int(response.headers["content-length"])
                with pytest.raises(httpx.RemoteProtocolError):
                    for piece in response.iter_raw():
                        received += piece
        assert 0 < len(received) < expected
        (event,) = [e for e in events(world.vault, "study.download") if e.object_id == study]
        assert event.outcome == "failure:integrity"
        assert event.remote == "127.0.0.1"


class TestAccessLog:
    def test_archive_download_is_recorded_for_the_token(self, world: World) -> None:
        before = {e.seq for e in events(world.vault, "study.download")}
        response = archive_of(world, world.study)
        (event,) = [e for e in events(world.vault, "study.download") if e.seq not in before]
        assert (event.actor, event.object_type, event.object_id, event.outcome) == (
            f"token:{world.token_id}",
            "pseudonymised-study",
            world.study,
            "success",
        )
        assert event.remote == "testclient"
        assert f'"bytes":{len(response.content)}' in event.detail

    def test_instance_read_is_recorded_for_the_session_user(self, world: World) -> None:
        row = next(r for r in instance_rows(world.vault, world.study) if r.state == "done")
        before = {e.seq for e in events(world.vault, "instance.read")}
        response = world.as_user(world.engineer).get(f"/api/engineer/instances/{row.id}")
        assert response.status_code == 200
        (event,) = [e for e in events(world.vault, "instance.read") if e.seq not in before]
        assert (event.actor, event.object_id, event.outcome) == (
            f"user:{world.engineer.user_id}",
            row.id,
            "success",
        )

    def test_refused_reads_are_recorded_with_their_outcome(self, world: World) -> None:
        archive_of(world, world.queued)
        world.as_user(world.other_engineer).get(f"/api/engineer/studies/{world.study}/archive")
        outcomes = {
            (e.actor, e.object_id, e.outcome) for e in events(world.vault, "study.download")
        }
        assert (f"token:{world.token_id}", world.queued, "not-ready") in outcomes
        assert (f"user:{world.other_engineer.user_id}", world.study, "not-found") in outcomes

    def test_listing_and_metadata_reads_are_recorded(self, world: World) -> None:
        listed = world.client.get("/api/engineer/studies", headers=world.bearer()).json()
        world.client.get(f"/api/engineer/studies/{world.study}", headers=world.bearer())
        listing = events(world.vault, "study.list")[-1]
        assert (listing.actor, listing.outcome) == (f"token:{world.token_id}", "success")
        assert json.loads(listing.detail)["results"] == len(listed)
        metadata = events(world.vault, "study.metadata")[-1]
        assert (metadata.object_id, metadata.outcome) == (world.study, "success")

    def test_the_chain_still_verifies_after_the_reads(self, world: World) -> None:
        archive_of(world, world.study)
        assert world.vault.audit.verify() == []


class TestListingDetails:
    def test_listing_gives_modalities_and_the_date_shift_mark(self, world: World) -> None:
        response = world.client.get("/api/engineer/studies", headers=world.bearer())
        listed = {study["pseudo_study_id"]: study for study in response.json()}
        done, queued = listed[world.study], listed[world.queued]
        assert (done["modalities"], done["date_shifted"]) == (["CT"], True)
        assert {s["modality"] for s in done["series"]} == {"CT"}
        assert (queued["modalities"], queued["date_shifted"]) == ([], None)


class TestMetadata:
    def test_study_metadata_has_state_counts_marks_and_series(self, world: World) -> None:
        response = world.client.get(f"/api/engineer/studies/{world.study}", headers=world.bearer())
        assert response.status_code == 200
        body = response.json()
        assert (body["state"], body["instance_count"], body["quarantined_count"]) == ("done", 5, 1)
        assert (body["modalities"], body["date_shifted"]) == (["CT"], True)
        assert body["patient_identity_removed"] is True
        assert body["deidentification_methods"]
        assert body["pseudo_study_uid"].startswith("2.25.")
        assert body["archive_bytes"] == len(archive_of(world, world.study).content)
        assert sorted(s["instance_count"] for s in body["series"]) == [2, 3]
        assert {s["geometry"]["rows"] for s in body["series"]} == {64}

    def test_study_metadata_carries_none_of_the_planted_identifiers(self, world: World) -> None:
        response = world.client.get(f"/api/engineer/studies/{world.study}", headers=world.bearer())
        text = response.text.lower()
        original_uids = {ds.StudyInstanceUID for ds in world.originals}
        original_uids |= {ds.SeriesInstanceUID for ds in world.originals}
        assert [m for m in SyntheticPatient().markers() if m.lower() in text] == []
        assert [uid for uid in original_uids if uid in response.text] == []

    def test_unfinished_study_metadata_shows_its_state(self, world: World) -> None:
        response = world.client.get(f"/api/engineer/studies/{world.queued}", headers=world.bearer())
        assert response.status_code == 200
        body = response.json()
        assert (body["state"], body["archive_bytes"], body["series"]) == ("queued", None, [])

    def test_series_metadata_lists_its_instances(self, world: World) -> None:
        rows = served_rows(world.vault, world.study)
        series_uid = rows[0].pseudo_series_uid
        response = world.client.get(
            f"/api/engineer/studies/{world.study}/series/{series_uid}", headers=world.bearer()
        )
        assert response.status_code == 200
        listed = {i["pseudo_instance_id"]: i for i in response.json()["instances"]}
        expected = {row.id: row for row in rows if row.pseudo_series_uid == series_uid}
        assert set(listed) == set(expected)
        for row_id, row in expected.items():
            assert (listed[row_id]["sha256"], listed[row_id]["size"]) == (row.sha256, row.size)
            assert listed[row_id]["pseudo_sop_uid"] == row.pseudo_sop_uid

    def test_another_engineers_study_metadata_answers_404(self, world: World) -> None:
        client = world.as_user(world.other_engineer)
        assert client.get(f"/api/engineer/studies/{world.study}").status_code == 404


class TestSeriesArchive:
    def test_series_archive_holds_that_series_as_in_the_study_archive(self, world: World) -> None:
        rows = served_rows(world.vault, world.study)
        series_uid = rows[-1].pseudo_series_uid
        path = f"/api/engineer/studies/{world.study}/series/{series_uid}/archive"
        response = world.client.get(path, headers=world.bearer())
        assert response.status_code == 200
        with zipfile.ZipFile(io.BytesIO(archive_of(world, world.study).content)) as whole:
            expected = {n: whole.read(n) for n in whole.namelist() if n.startswith(series_uid)}
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert {name: archive.read(name) for name in archive.namelist()} == expected
        assert len(expected) == sum(1 for row in rows if row.pseudo_series_uid == series_uid)

    def test_unknown_series_answers_404(self, world: World) -> None:
        path = f"/api/engineer/studies/{world.study}/series/2.25.1/archive"
        assert world.client.get(path, headers=world.bearer()).status_code == 404


class TestRangesAndConditions:
    def test_resumed_download_equals_the_whole_archive(self, world: World) -> None:
        whole = archive_of(world, world.study)
        cut = len(whole.content) // 3  # inside a member's data
        rest = archive_of(
            world, world.study, {"Range": f"bytes={cut}-", "If-Range": whole.headers["etag"]}
        )
        assert rest.status_code == 206
        assert (
            rest.headers["content-range"]
            == f"bytes {cut}-{len(whole.content) - 1}/{len(whole.content)}"
        )
        assert int(rest.headers["content-length"]) == len(rest.content)
        assert whole.content[:cut] + rest.content == whole.content

    @pytest.mark.parametrize(
        "spec",
        ["bytes=0-9", "bytes=100-200000", "bytes=-100", "bytes=-1", "bytes=5-5"],
        ids=["head", "across-members", "suffix", "last-byte", "one-byte"],
    )
    def test_a_range_is_that_slice_of_the_whole(self, world: World, spec: str) -> None:
        whole = archive_of(world, world.study).content
        first, _, last = spec.removeprefix("bytes=").partition("-")
        start = len(whole) - int(last) if not first else int(first)
        stop = len(whole) if not first or not last else int(last) + 1
        response = archive_of(world, world.study, {"Range": spec})
        assert response.status_code == 206
        assert response.content == whole[start:stop]

    def test_range_into_the_central_directory_after_a_cold_start(self, world: World) -> None:
        whole = archive_of(world, world.study).content
        directory = whole.rindex(b"PK\x01\x02") - 10
        world.client.app.state.crc_cache = None  # type: ignore[attr-defined]
        response = archive_of(world, world.study, {"Range": f"bytes={directory}-"})
        assert response.status_code == 206
        assert response.content == whole[directory:]

    def test_if_range_naming_another_version_sends_the_whole_archive(self, world: World) -> None:
        whole = archive_of(world, world.study).content
        response = archive_of(world, world.study, {"Range": "bytes=10-", "If-Range": '"old"'})
        assert (response.status_code, response.content) == (200, whole)

    def test_several_ranges_are_answered_with_the_whole_archive(self, world: World) -> None:
        whole = archive_of(world, world.study).content
        response = archive_of(world, world.study, {"Range": "bytes=0-1,5-6"})
        assert (response.status_code, response.content) == (200, whole)

    def test_range_past_the_end_answers_416_with_the_length(self, world: World) -> None:
        size = len(archive_of(world, world.study).content)
        response = archive_of(world, world.study, {"Range": f"bytes={size}-"})
        assert response.status_code == 416
        assert response.headers["content-range"] == f"bytes */{size}"
        assert response.json()["error"] == "range-not-satisfiable"

    def test_if_none_match_with_the_etag_answers_304(self, world: World) -> None:
        etag = archive_of(world, world.study).headers["etag"]
        response = archive_of(world, world.study, {"If-None-Match": etag})
        assert (response.status_code, response.content) == (304, b"")
        assert response.headers["etag"] == etag
        changed = archive_of(world, world.study, {"If-None-Match": '"other"'})
        assert changed.status_code == 200

    def test_instance_ranges_and_conditions(self, world: World) -> None:
        row = served_rows(world.vault, world.study)[0]
        whole = instance_bytes(world, row.id)
        path = f"/api/engineer/instances/{row.id}"
        part = world.client.get(path, headers={**world.bearer(), "Range": "bytes=128-131"})
        assert (part.status_code, part.content) == (206, whole[128:132])
        assert part.content == b"DICM"
        tail = world.client.get(path, headers={**world.bearer(), "Range": "bytes=-10"})
        assert tail.content == whole[-10:]
        same = world.client.get(
            path, headers={**world.bearer(), "If-None-Match": f'"{row.sha256}"'}
        )
        assert same.status_code == 304

    def test_head_gives_the_length_and_etag_of_the_download_without_a_body(
        self, world: World
    ) -> None:
        whole = archive_of(world, world.study)
        path = f"/api/engineer/studies/{world.study}/archive"
        head = world.client.head(path, headers=world.bearer())
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["etag"] == whole.headers["etag"]
        assert head.headers["content-length"] == str(len(whole.content))
        assert head.headers["accept-ranges"] == "bytes"
        ranged = world.client.head(path, headers={**world.bearer(), "Range": "bytes=10-19"})
        assert (ranged.status_code, ranged.headers["content-length"]) == (206, "10")

    def test_head_of_an_instance_out_of_reach_answers_as_an_unknown_one(self, world: World) -> None:
        row = served_rows(world.vault, world.study)[0]
        other = world.as_user(world.other_engineer)
        assert other.head(f"/api/engineer/instances/{row.id}").status_code == 404
        assert other.head("/api/engineer/instances/0123456789abcdef").status_code == 404
        mine = world.client.head(f"/api/engineer/instances/{row.id}", headers=world.bearer())
        assert (mine.status_code, mine.headers["content-length"]) == (200, str(row.size))

    def test_head_is_recorded_as_headers_only(self, world: World) -> None:
        before = {e.seq for e in events(world.vault, "study.download")}
        world.client.head(f"/api/engineer/studies/{world.study}/archive", headers=world.bearer())
        (event,) = [e for e in events(world.vault, "study.download") if e.seq not in before]
        assert (event.outcome, json.loads(event.detail)) == ("headers-only", {"bytes": 0})

    def test_a_ranged_download_is_recorded_with_its_offset(self, world: World) -> None:
        before = {e.seq for e in events(world.vault, "study.download")}
        response = archive_of(world, world.study, {"Range": "bytes=1000-"})
        (event,) = [e for e in events(world.vault, "study.download") if e.seq not in before]
        assert event.outcome == "success"
        assert json.loads(event.detail) == {"bytes": len(response.content), "from": 1000}
