"""DICOMweb under /dicomweb: QIDO-RS and WADO-RS, tested with dicomweb-client against a server.

The app runs under a real uvicorn server (see :mod:`tests.engineer_support`)
and is queried by dicomweb-client (the client 3D Slicer and many scripts
use) with an engineer's API token; raw HTTP is used where the client hides
what is checked (multipart bytes, headers, statuses). The world holds the
engineer's finished study (two series, a quarantined capture), a queued
study and a study still being de-identified in the same case, and another
engineer's finished study in their own case.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy import select

from dicom_ingest.synthetic import SyntheticPatient
from tests.engineer_support import (
    World,
    assign,
    engineer_world,
    events,
    ingest,
    pseudo_study,
    pseudonymise,
    served_rows,
    serving,
    tamper,
    two_series,
    wado_parts,
)
from tests.services.vault_env import make_case
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import Instance

RUNNING_UID = "2.25.4242424242424242"
DICOM_ACCEPT = 'multipart/related; type="application/dicom"'


@dataclass
class Web:
    world: World
    url: str
    client: DICOMwebClient
    study_uid: str
    other_study_uid: str
    other_token: str

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.world.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def dicomweb_client(url: str, token: str) -> DICOMwebClient:
    return DICOMwebClient(url=f"{url}/dicomweb", headers={"Authorization": f"Bearer {token}"})


def _running_study(world: World) -> None:
    """A study of the engineer's case whose pseudonymised copy is still being made."""
    study_id = ingest(world.case, two_series(seed=7, slices=(1, 1)))
    with world.vault.catalog.session() as session:
        session.add(
            PseudonymisedStudy(study_id=study_id, state="running", pseudo_study_uid=RUNNING_UID)
        )


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    with engineer_world(tmp_path_factory.mktemp("dicomweb") / "data", "DW-CASE") as world:
        other = pseudonymise(
            world.vault, ingest(world.other_case, two_series(seed=5, slices=(1, 1)))
        )
        _running_study(world)
        with serving(world.vault) as url:
            yield Web(
                world=world,
                url=url,
                client=dicomweb_client(url, world.token),
                study_uid=str(pseudo_study(world.vault, world.study).pseudo_study_uid),
                other_study_uid=str(pseudo_study(world.vault, other).pseudo_study_uid),
                other_token=world.auth.token(world.other_engineer),
            )


def value(result: dict, keyword_tag: str) -> object:
    return result[keyword_tag]["Value"][0]


def zip_members(web: Web, pseudo_study_id: str) -> list[bytes]:
    """The study archive's members, in archive order, from the REST download."""
    with web.http() as http:
        response = http.get(f"/api/engineer/studies/{pseudo_study_id}/archive")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return [archive.read(info) for info in archive.infolist()]


def multipart_parts(web: Web, path: str, accept: str = DICOM_ACCEPT) -> list[bytes]:
    """The parts of a WADO-RS response, decoded by dicomweb-client's own decoder."""
    return wado_parts(web.url, path, {**web.world.bearer(), "Accept": accept})


class TestQido:
    def test_search_for_studies_finds_the_callers_finished_study(self, web: Web) -> None:
        (study,) = web.client.search_for_studies()
        assert value(study, "0020000D") == web.study_uid
        assert value(study, "00100020") == pseudo_study(web.world.vault, web.world.study).pseudonym
        assert value(study, "00201206") == 2 and value(study, "00201208") == 5
        assert study["00080061"]["Value"] == ["CT"]
        assert value(study, "00080020") != web.world.originals[0].StudyDate  # shifted
        assert value(study, "00081190").endswith(f"/dicomweb/studies/{web.study_uid}")

    def test_study_search_filters_on_uid_pseudonym_and_modality(self, web: Web) -> None:
        pseudonym = str(pseudo_study(web.world.vault, web.world.study).pseudonym)
        search = web.client.search_for_studies
        assert len(search(search_filters={"StudyInstanceUID": web.study_uid})) == 1
        assert len(search(search_filters={"PatientID": pseudonym[:6] + "*"})) == 1
        assert len(search(search_filters={"PatientID": "PSN-NOBODY"})) == 0
        assert len(search(search_filters={"ModalitiesInStudy": "CT"})) == 1
        assert len(search(search_filters={"ModalitiesInStudy": "MR"})) == 0

    def test_search_for_series_lists_both_series_with_their_counts(self, web: Web) -> None:
        found = web.client.search_for_series(web.study_uid)
        rows = served_rows(web.world.vault, web.world.study)
        assert {value(s, "0020000E") for s in found} == {row.pseudo_series_uid for row in rows}
        assert sorted(value(s, "00201209") for s in found) == [2, 3]
        assert {value(s, "00080060") for s in found} == {"CT"}

    def test_search_for_instances_lists_the_served_instances_only(self, web: Web) -> None:
        found = web.client.search_for_instances(web.study_uid)
        rows = served_rows(web.world.vault, web.world.study)
        assert sorted(value(i, "00080018") for i in found) == sorted(r.pseudo_sop_uid for r in rows)
        series_uid = str(rows[0].pseudo_series_uid)
        in_series = web.client.search_for_instances(web.study_uid, series_uid)
        expected = {r.pseudo_sop_uid for r in rows if r.pseudo_series_uid == series_uid}
        assert {value(i, "00080018") for i in in_series} == expected

    def test_limit_and_offset_page_through_the_instances(self, web: Web) -> None:
        pages = [
            web.client.search_for_instances(web.study_uid, limit=2, offset=offset)
            for offset in (0, 2, 4, 6)
        ]
        assert [len(page) for page in pages] == [2, 2, 1, 0]
        uids = [value(item, "00080018") for page in pages for item in page]
        assert len(set(uids)) == 5
        remaining = web.client.search_for_instances(web.study_uid, limit=2, get_remaining=True)
        assert len(remaining) == 5

    def test_includefield_returns_header_attributes(self, web: Web) -> None:
        (study,) = web.client.search_for_studies(fields=["LongitudinalTemporalInformationModified"])
        assert value(study, "00280303") == "MODIFIED"
        instance = web.client.search_for_instances(web.study_uid, fields=["all"])[0]
        assert value(instance, "00120062") == "YES"
        assert "7FE00010" not in instance

    def test_an_unsupported_matching_key_is_ignored_with_a_warning(self, web: Web) -> None:
        with web.http() as http:
            response = http.get("/dicomweb/studies", params={"StudyDate": "20200101"})
        assert response.status_code == 200
        assert "StudyDate" in response.headers["warning"]
        assert len(response.json()) == 1

    def test_fuzzy_matching_is_refused_with_a_warning(self, web: Web) -> None:
        with web.http() as http:
            response = http.get("/dicomweb/studies", params={"fuzzymatching": "true"})
        assert response.status_code == 200
        assert "fuzzymatching" in response.headers["warning"]

    @pytest.mark.parametrize(
        ("params", "named"),
        [
            ({"NotAnAttribute": "1"}, "NotAnAttribute"),
            ({"00100020.00100021": "x"}, "00100020.00100021"),  # nested: not matched
            ({"emptyvaluematching": "true"}, "emptyvaluematching"),
            ({"multiplevaluematching": "true"}, "multiplevaluematching"),
            ({"includefield": "00081110.00081150"}, "includefield=00081110.00081150"),
            ({"x<script>": "1"}, "an unknown parameter"),  # not echoed
        ],
    )
    def test_what_the_search_does_not_support_is_ignored_with_a_warning(
        self, web: Web, params: dict[str, str], named: str
    ) -> None:
        with web.http() as http:
            response = http.get("/dicomweb/studies", params=params)
        assert response.status_code == 200
        assert f"not supported: {named}" in response.headers["warning"]
        assert len(response.json()) == 1

    def test_a_cache_buster_is_ignored_quietly(self, web: Web) -> None:
        with web.http() as http:
            response = http.get("/dicomweb/studies", params={"_": "1733500000"})
        assert response.status_code == 200
        assert "warning" not in response.headers
        assert len(response.json()) == 1

    def test_a_malformed_limit_is_a_bad_request(self, web: Web) -> None:
        with web.http() as http:
            response = http.get("/dicomweb/studies", params={"limit": "ten"})
        assert response.status_code == 400
        assert response.json()["detail"] == "limit must be a non-negative integer"


class TestWado:
    def test_retrieved_instances_are_bit_identical_to_the_zip_members(self, web: Web) -> None:
        parts = multipart_parts(web, f"/dicomweb/studies/{web.study_uid}")
        assert parts == zip_members(web, web.world.study)

    def test_dicomweb_client_retrieves_study_series_and_instance(self, web: Web) -> None:
        rows = served_rows(web.world.vault, web.world.study)
        study = web.client.retrieve_study(web.study_uid)
        assert [ds.SOPInstanceUID for ds in study] == [row.pseudo_sop_uid for row in rows]
        first = rows[0]
        series = web.client.retrieve_series(web.study_uid, str(first.pseudo_series_uid))
        assert len(series) == sum(r.pseudo_series_uid == first.pseudo_series_uid for r in rows)
        one = web.client.retrieve_instance(
            web.study_uid, str(first.pseudo_series_uid), str(first.pseudo_sop_uid)
        )
        assert one.SOPInstanceUID == first.pseudo_sop_uid
        assert one.pixel_array.shape == (64, 64)

    def test_the_body_has_an_exact_length(self, web: Web) -> None:
        with web.http() as http:
            response = http.get(f"/dicomweb/studies/{web.study_uid}")
        assert response.headers["content-type"].startswith(DICOM_ACCEPT)
        assert int(response.headers["content-length"]) == len(response.content)

    def test_metadata_is_the_headers_with_pixel_data_by_reference(self, web: Web) -> None:
        found = web.client.retrieve_study_metadata(web.study_uid)
        rows = served_rows(web.world.vault, web.world.study)
        assert [value(item, "00080018") for item in found] == [r.pseudo_sop_uid for r in rows]
        assert all(set(item["7FE00010"]) == {"vr", "BulkDataURI"} for item in found)
        assert {value(item, "00280303") for item in found} == {"MODIFIED"}
        text = repr(found).lower()
        assert [m for m in SyntheticPatient().markers() if m.lower() in text] == []

    def test_series_and_instance_metadata(self, web: Web) -> None:
        first = served_rows(web.world.vault, web.world.study)[0]
        series_uid, sop_uid = str(first.pseudo_series_uid), str(first.pseudo_sop_uid)
        series = web.client.retrieve_series_metadata(web.study_uid, series_uid)
        assert {value(item, "0020000E") for item in series} == {series_uid}
        one = web.client.retrieve_instance_metadata(web.study_uid, series_uid, sop_uid)
        assert value(one, "00080018") == sop_uid
        assert one["7FE00010"]["BulkDataURI"].endswith(f"/instances/{sop_uid}/bulkdata/7FE00010")

    @pytest.mark.parametrize(
        ("syntax", "status"),
        [("*", 200), ("1.2.840.10008.1.2.1", 200), ("1.2.840.10008.1.2.4.50", 406)],
        ids=["any", "stored", "jpeg-baseline"],
    )
    def test_transfer_syntax_negotiation(self, web: Web, syntax: str, status: int) -> None:
        accept = f"{DICOM_ACCEPT}; transfer-syntax={syntax}"
        with web.http() as http:
            response = http.get(f"/dicomweb/studies/{web.study_uid}", headers={"Accept": accept})
        assert response.status_code == status
        if status == 406:
            assert response.json()["error"] == "not-acceptable"

    def test_a_study_in_two_syntaxes_is_served_to_ranges_that_name_both(self, web: Web) -> None:
        world = web.world
        datasets = two_series(seed=12, slices=(1, 1))
        datasets[-1].file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        study = pseudonymise(world.vault, ingest(world.case, datasets))
        path = f"/dicomweb/studies/{pseudo_study(world.vault, study).pseudo_study_uid}"
        explicit = f"{DICOM_ACCEPT}; transfer-syntax={ExplicitVRLittleEndian}"
        implicit = f"{DICOM_ACCEPT}; transfer-syntax={ImplicitVRLittleEndian}"
        with web.http() as http:
            only_one = http.get(path, headers={"Accept": explicit})
        parts = multipart_parts(web, path, accept=f"{explicit}, {implicit}")
        assert only_one.status_code == 406
        syntaxes = {str(dcmread(io.BytesIO(part)).file_meta.TransferSyntaxUID) for part in parts}
        assert syntaxes == {ExplicitVRLittleEndian, ImplicitVRLittleEndian}

    def test_a_tampered_first_instance_answers_an_error_before_any_data(self, web: Web) -> None:
        world = web.world
        study = pseudonymise(world.vault, ingest(world.case, two_series(seed=11, slices=(1, 1))))
        tamper(world.vault, served_rows(world.vault, study)[0])
        uid = pseudo_study(world.vault, study).pseudo_study_uid
        with web.http() as http:
            response = http.get(f"/dicomweb/studies/{uid}")
        assert (response.status_code, response.json()["error"]) == (500, "integrity")
        outcomes = {
            e.outcome for e in events(world.vault, "dicomweb.retrieve") if e.object_id == study
        }
        assert outcomes == {"failure:integrity"}


class TestRefusals:
    def test_another_engineer_neither_finds_nor_retrieves_the_study(self, web: Web) -> None:
        other = dicomweb_client(web.url, web.other_token)
        assert [value(s, "0020000D") for s in other.search_for_studies()] == [web.other_study_uid]
        assert other.search_for_series(web.study_uid) == []
        assert other.search_for_instances(search_filters={"StudyInstanceUID": web.study_uid}) == []
        with web.http(web.other_token) as http:
            for path in ("", "/metadata"):
                response = http.get(f"/dicomweb/studies/{web.study_uid}{path}")
                assert response.status_code == 404, path

    def test_the_engineer_does_not_find_the_other_engineers_study(self, web: Web) -> None:
        found = web.client.search_for_studies(
            search_filters={"StudyInstanceUID": web.other_study_uid}
        )
        assert found == []
        with web.http() as http:
            assert http.get(f"/dicomweb/studies/{web.other_study_uid}").status_code == 404

    def test_a_token_bound_to_another_case_finds_nothing(self, web: Web) -> None:
        world = web.world
        other = make_case(world.vault, "DW-CASE-3")
        assign(world.vault, other.case_id, world.engineer)
        bound = dicomweb_client(web.url, world.auth.token(world.engineer, case_id=other.case_id))
        assert bound.search_for_studies() == []
        assert bound.search_for_instances() == []

    def test_original_uids_reach_nothing(self, web: Web) -> None:
        original = web.world.originals[0]
        search = web.client.search_for_instances
        assert search(search_filters={"StudyInstanceUID": original.StudyInstanceUID}) == []
        assert search(search_filters={"SOPInstanceUID": original.SOPInstanceUID}) == []
        with web.http() as http:
            assert http.get(f"/dicomweb/studies/{original.StudyInstanceUID}").status_code == 404

    def test_a_study_being_deidentified_answers_409_with_its_state(self, web: Web) -> None:
        with web.http() as http:
            response = http.get(f"/dicomweb/studies/{RUNNING_UID}")
        assert response.status_code == 409
        assert response.json()["error"] == "not-ready"
        assert "running" in response.json()["detail"]
        assert web.client.search_for_studies(search_filters={"StudyInstanceUID": RUNNING_UID}) == []

    def test_the_quarantined_capture_is_never_listed(self, web: Web) -> None:
        capture = "1.2.840.10008.5.1.4.1.1.7"
        found = web.client.search_for_instances(search_filters={"SOPClassUID": capture})
        assert found == []

    @pytest.mark.parametrize("role", ["clinician", "admin"])
    def test_clinician_and_admin_are_refused(self, web: Web, role: str) -> None:
        client = web.world.as_user(getattr(web.world, role))
        for path in ("/dicomweb/studies", f"/dicomweb/studies/{web.study_uid}"):
            assert client.get(path).status_code == 403, path

    def test_only_pseudonymised_objects_are_ever_opened(
        self, web: Web, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        world, opened = web.world, []
        store = world.vault.store
        real = store.open_reader
        monkeypatch.setattr(store, "open_reader", lambda key: opened.append(key) or real(key))
        client = world.client
        for path in ("/studies", f"/studies/{web.study_uid}", f"/studies/{web.study_uid}/metadata"):
            client.get(f"/dicomweb{path}", headers=world.bearer())
        client.get(
            f"/dicomweb/studies/{web.study_uid}/instances?includefield=all", headers=world.bearer()
        )
        row = served_rows(world.vault, world.study)[0]
        instance = (
            f"/dicomweb/studies/{web.study_uid}/series/{row.pseudo_series_uid}"
            f"/instances/{row.pseudo_sop_uid}"
        )
        # Patient's Name is no bulk data: 404, but only after the copy's header was read.
        for tail, expected in (
            ("/frames/1", 200),
            ("/bulkdata/7FE00010", 200),
            ("/bulkdata/00100010", 404),
        ):
            before = len(opened)
            status = client.get(f"{instance}{tail}", headers=world.bearer()).status_code
            assert (status, len(opened) > before) == (expected, True), tail
        with world.vault.catalog.session() as session:
            served = set(session.scalars(select(PseudonymisedInstance.object_key)))
            originals = set(session.scalars(select(Instance.object_key)))
        assert opened and set(opened) <= served
        assert not set(opened) & originals


class TestAccessLog:
    def test_searches_retrievals_and_metadata_are_recorded(self, web: Web) -> None:
        world = web.world
        with web.http() as http:
            found = http.get("/dicomweb/studies").json()
            body = http.get(f"/dicomweb/studies/{web.study_uid}").content
            http.get(f"/dicomweb/studies/{web.study_uid}/metadata")
        actor = f"token:{world.token_id}"
        search = events(world.vault, "dicomweb.search")[-1]
        assert (search.actor, search.outcome, search.remote) == (actor, "success", "127.0.0.1")
        assert '"level":"study"' in search.detail
        assert f'"results":{len(found)}' in search.detail
        retrieve = events(world.vault, "dicomweb.retrieve")[-1]
        assert (retrieve.actor, retrieve.object_id, retrieve.outcome) == (
            actor,
            world.study,
            "success",
        )
        assert f'"bytes":{len(body)}' in retrieve.detail and '"instances":5' in retrieve.detail
        metadata = events(world.vault, "dicomweb.metadata")[-1]
        assert (metadata.object_type, metadata.object_id) == ("pseudonymised-study", world.study)

    def test_a_refused_retrieval_is_recorded_with_its_outcome(self, web: Web) -> None:
        with web.http(web.other_token) as http:
            http.get(f"/dicomweb/studies/{web.study_uid}")
        last = events(web.world.vault, "dicomweb.retrieve")[-1]
        assert last.actor.startswith("token:") and last.outcome == "not-found"

    def test_the_chain_still_verifies(self, web: Web) -> None:
        assert web.world.vault.audit.verify() == []
