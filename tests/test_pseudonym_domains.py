"""Pseudonyms and date offsets of (patient ID, patient-ID domain), on real vaults.

A patient ID without issuer, or with an issuer its organisation registered,
is in that organisation's domain; any other issuer is a domain of its own
(:mod:`deidentify.pseudonyms`). The studies here go through ingest and the
de-identification pipeline of an embedded vault (filesystem, SQLite, local
key file); the commands run in this process on their own vault.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import inspect, select

from deidentify import PatientIdDomain, pseudonym
from deidentify.pipeline import StudyDeidentifier
from deidentify.pseudonyms import UNAFFILIATED
from deidentify.reidentify import reidentify
from dicom_ingest import IngestOrigin, IngestPipeline, ValidationPolicy
from dicom_ingest.summary import summarise
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series, write_series
from tests import cli_support
from vault import dsr, issuers
from vault.admin import create_case, get_or_create_organisation
from vault.catalog.db import alembic_config, make_engine, migrate
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import Base, Organisation, OrganisationIssuer
from vault.command_support import cli_actor
from vault.core import Vault, open_vault
from vault.dsr_search import SubjectIdentifiers, find_subject_studies
from vault.errors import InvalidInput, NotFound, PolicyRefused
from vault.objects import StoredObject, open_decrypted
from vault.settings import Settings

PATIENT = SyntheticPatient(patient_id="PQX4417093", issuer_of_patient_id="")
DPO = "user:dpo-test"


@dataclass(frozen=True)
class Copy:
    """What engineers receive of one study: its pseudonym and one file's header."""

    study_id: str
    pseudonym: str
    header: pydicom.Dataset

    @property
    def study_date(self) -> date:
        return datetime.strptime(str(self.header.StudyDate), "%Y%m%d").date()


class Hospital:
    """An organisation of the vault and a way to send it studies."""

    def __init__(self, vault: Vault, name: str) -> None:
        self.vault = vault
        with vault.catalog.session() as session:
            self.id = get_or_create_organisation(session, name).id
        self.pipeline = IngestPipeline(vault, ValidationPolicy.from_settings(vault.settings.policy))
        self._cases = 0

    def register(self, issuer: str) -> None:
        with self.vault.catalog.session() as session:
            issuers.add_issuer(session, session.get(Organisation, self.id), issuer)

    def send(self, patient: SyntheticPatient, *, seed: int) -> str:
        """A two-slice study of ``patient`` into a new case; its study id."""
        self._cases += 1
        with self.vault.catalog.session() as session:
            org = session.get(Organisation, self.id)
            case = create_case(session, f"{self.id[:8]}-{self._cases}-{seed}", org)
            origin = IngestOrigin("cli", "cli", self.id, case.id)
        series = make_ct_series(2, rows=16, columns=16, seed=seed, patient=patient)
        ids = {self.pipeline.ingest(io.BytesIO(encode(ds)), origin).study_id for ds in series}
        (study_id,) = ids
        return study_id

    def send_to_one_case(self, *patients: SyntheticPatient) -> list[str]:
        """A two-slice study of each of ``patients`` into one new case; their instance ids.

        Raises:
            PolicyRefused: the case's one-patient rule refused a study.
        """
        self._cases += 1
        with self.vault.catalog.session() as session:
            org = session.get(Organisation, self.id)
            case = create_case(session, f"{self.id[:8]}-{self._cases}-one", org)
            origin = IngestOrigin("cli", "cli", self.id, case.id)
        ids = []
        for seed, patient in enumerate(patients, start=40):
            for ds in make_ct_series(2, rows=16, columns=16, seed=seed, patient=patient):
                ids.append(self.pipeline.ingest(io.BytesIO(encode(ds)), origin).instance_id)
        return ids

    def copy(self, patient: SyntheticPatient, *, seed: int) -> Copy:
        """Send a study of ``patient`` and de-identify it."""
        study_id = self.send(patient, seed=seed)
        return pseudonymised(self.vault, study_id)


def pseudonymised(vault: Vault, study_id: str) -> Copy:
    assert StudyDeidentifier(vault).run(study_id).state == "done"
    with vault.catalog.session() as session:
        study = session.scalar(
            select(PseudonymisedStudy).where(PseudonymisedStudy.study_id == study_id)
        )
        assert study is not None and study.pseudonym
        row = session.scalar(
            select(PseudonymisedInstance).where(
                PseudonymisedInstance.pseudo_study_id == study.id,
                PseudonymisedInstance.state == "done",
            )
        )
    assert row is not None and row.object_key and row.key_id and row.sha256
    stored = StoredObject(row.object_key, row.key_id, row.sha256, row.size or 0)
    with open_decrypted(vault.store, vault.keyring.data_key(row.key_id), stored) as stream:
        header = pydicom.dcmread(io.BytesIO(stream.read()), stop_before_pixels=True)
    assert header.PatientID == study.pseudonym
    return Copy(study_id, study.pseudonym, header)


def on(day: str, issuer: str, patient: SyntheticPatient = PATIENT) -> SyntheticPatient:
    return replace(patient, study_date=day, issuer_of_patient_id=issuer)


def days_between(first: str, second: str) -> int:
    parse = lambda value: datetime.strptime(value, "%Y%m%d").date()  # noqa: E731
    return (parse(second) - parse(first)).days


@pytest.fixture
def hospital_a(embedded_vault: Vault) -> Hospital:
    return Hospital(embedded_vault, "Hospital A")


@pytest.fixture
def hospital_b(embedded_vault: Vault) -> Hospital:
    return Hospital(embedded_vault, "Hospital B")


# --- one organisation ------------------------------------------------------------------


class TestOneOrganisation:
    def test_pacs_study_with_registered_issuer_and_cd_study_without_share_pseudonym_and_shift(
        self, hospital_a: Hospital
    ) -> None:
        hospital_a.register("HOSP-A")
        pacs = hospital_a.copy(on("20230517", "HOSP-A"), seed=1)
        cd = hospital_a.copy(on("20230901", ""), seed=2)
        assert pacs.pseudonym == cd.pseudonym
        assert pacs.header.StudyDate != "20230517"  # shifted...
        interval = (cd.study_date - pacs.study_date).days
        assert interval == days_between("20230517", "20230901")  # ...by one offset

    def test_any_registered_issuer_of_the_organisation_links(self, hospital_a: Hospital) -> None:
        hospital_a.register("HOSP-A")
        hospital_a.register("1.2.3.4.5")
        oid = hospital_a.copy(on("20230517", "1.2.3.4.5"), seed=1)
        name = hospital_a.copy(on("20240102", " HOSP-A "), seed=2)
        assert oid.pseudonym == name.pseudonym
        assert (name.study_date - oid.study_date).days == days_between("20230517", "20240102")

    def test_an_issuer_the_organisation_did_not_register_is_another_domain(
        self, hospital_a: Hospital
    ) -> None:
        with_issuer = hospital_a.copy(on("20230517", "HOSP-A"), seed=1)
        without = hospital_a.copy(on("20230517", ""), seed=2)
        assert with_issuer.pseudonym != without.pseudonym
        assert with_issuer.header.StudyDate != without.header.StudyDate

    def test_issuers_are_matched_with_their_case(self, hospital_a: Hospital) -> None:
        hospital_a.register("HOSP-A")
        upper = hospital_a.copy(on("20230517", "HOSP-A"), seed=1)
        lower = hospital_a.copy(on("20230517", "hosp-a"), seed=2)
        assert upper.pseudonym != lower.pseudonym

    def test_the_pseudonym_is_the_patient_id_in_the_organisations_domain(
        self, hospital_a: Hospital
    ) -> None:
        copy = hospital_a.copy(on("20230517", ""), seed=1)
        mac_key = hospital_a.vault.keyring.provider.mac_key("pseudonym")
        domain = PatientIdDomain.of_organisation(hospital_a.id)
        assert copy.pseudonym == pseudonym(mac_key, PATIENT.patient_id, domain)


# --- two organisations -----------------------------------------------------------------


class TestOneCase:
    """A case's one-patient rule and the upload summary follow the organisation's issuers."""

    def test_a_cd_study_without_issuer_joins_the_pacs_study_of_its_patient(
        self, hospital_a: Hospital
    ) -> None:
        hospital_a.register("HOSPA-MRN")
        ids = hospital_a.send_to_one_case(on("20240110", "HOSPA-MRN"), on("20240301", ""))
        summary = summarise(hospital_a.vault, ids)
        assert len(summary.series) == 2
        assert [w.code for w in summary.warnings] == []  # not "mixed-patients"

    def test_without_the_registration_the_same_studies_are_two_patients(
        self, hospital_a: Hospital
    ) -> None:
        with pytest.raises(PolicyRefused, match="another patient"):
            hospital_a.send_to_one_case(on("20240110", "HOSPA-MRN"), on("20240301", ""))

    def test_an_issuer_another_organisation_registered_is_still_another_patient_here(
        self, hospital_a: Hospital, hospital_b: Hospital
    ) -> None:
        hospital_b.register("HOSPB-MRN")
        with pytest.raises(PolicyRefused, match="another patient"):
            hospital_a.send_to_one_case(on("20240110", "HOSPB-MRN"), on("20240301", ""))

    def test_the_data_subject_search_finds_both_studies_of_the_case(
        self, hospital_a: Hospital
    ) -> None:
        hospital_a.register("HOSPA-MRN")
        hospital_a.send_to_one_case(on("20240110", "HOSPA-MRN"), on("20240301", ""))
        vault = hospital_a.vault
        for issuers_given in ((), ("HOSPA-MRN",)):
            given = SubjectIdentifiers(PATIENT.patient_id, issuers=issuers_given)
            request = dsr.open_request(
                vault, kind="access", received_at=vault.clock.now(), actor=DPO
            )
            assert len(find_subject_studies(vault, request.id, given, actor=DPO).matched) == 2


class TestTwoOrganisations:
    def test_one_patient_id_without_issuer_at_two_organisations_is_two_patients(
        self, hospital_a: Hospital, hospital_b: Hospital
    ) -> None:
        at_a = hospital_a.copy(on("20230517", ""), seed=1)
        at_b = hospital_b.copy(
            on("20230517", "", replace(PATIENT, family_name="Zephyrson")), seed=2
        )
        assert at_a.pseudonym != at_b.pseudonym
        assert at_a.header.StudyDate != at_b.header.StudyDate

    def test_an_unregistered_regional_issuer_links_the_organisations_sharing_it(
        self, hospital_a: Hospital, hospital_b: Hospital
    ) -> None:
        at_a = hospital_a.copy(on("20230517", "REGION-EAST"), seed=1)
        at_b = hospital_b.copy(on("20231120", "REGION-EAST"), seed=2)
        assert at_a.pseudonym == at_b.pseudonym
        assert (at_b.study_date - at_a.study_date).days == days_between("20230517", "20231120")

    def test_an_issuer_registered_by_one_organisation_links_wherever_it_is_sent(
        self, hospital_a: Hospital, hospital_b: Hospital
    ) -> None:
        hospital_a.register("HOSP-A")
        at_a = hospital_a.copy(on("20230517", ""), seed=1)
        referred = hospital_b.copy(on("20230601", "HOSP-A"), seed=2)
        assert at_a.pseudonym == referred.pseudonym

    def test_an_issuer_is_registered_by_one_organisation_only(
        self, hospital_a: Hospital, hospital_b: Hospital
    ) -> None:
        hospital_a.register("HOSP-A")
        with pytest.raises(InvalidInput, match="'Hospital A' has registered this issuer"):
            hospital_b.register("HOSP-A")
        with pytest.raises(InvalidInput, match="registered this issuer already"):
            hospital_a.register(" HOSP-A ")


# --- registrations refused -------------------------------------------------------------


class TestBadIssuers:
    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("X" * 65, "1 to 64 characters"),
            ("   ", "1 to 64 characters"),
            ("HOSP\nA", "no control character"),
            ("HOSP\x1b(B", "no control character"),
            ("HOSP\tA", "no control character"),
            ("HOSP\\A", "no backslash"),
        ],
    )
    def test_refused_with_a_message_that_does_not_repeat_it(
        self, hospital_a: Hospital, value: str, message: str
    ) -> None:
        with pytest.raises(InvalidInput, match=message) as refused:
            hospital_a.register(value)
        if value.strip():
            assert value.strip() not in str(refused.value)
        with hospital_a.vault.catalog.session() as session:
            assert issuers.issuers_of(session, hospital_a.id) == []

    def test_sixty_four_characters_are_accepted(self, hospital_a: Hospital) -> None:
        hospital_a.register("1." * 31 + "99")
        with hospital_a.vault.catalog.session() as session:
            assert issuers.issuers_of(session, hospital_a.id) == ["1." * 31 + "99"]

    def test_removing_an_issuer_the_organisation_has_not_is_not_found(
        self, hospital_a: Hospital
    ) -> None:
        with hospital_a.vault.catalog.session() as session, pytest.raises(NotFound):
            issuers.remove_issuer(session, session.get(Organisation, hospital_a.id), "HOSP-A")


# --- the data-protection officer -------------------------------------------------------


class TestDataSubjectSearchAndReidentification:
    @pytest.fixture
    def two_sources(self, hospital_a: Hospital) -> tuple[Hospital, str, str]:
        """Hospital A registers HOSP-A and 1.2.3.4.5; one study from its PACS, one from a CD."""
        hospital_a.register("HOSP-A")
        hospital_a.register("1.2.3.4.5")
        pacs = hospital_a.send(on("20230517", "HOSP-A"), seed=1)
        cd = hospital_a.send(on("20230901", ""), seed=2)
        return hospital_a, pacs, cd

    def search(self, vault: Vault, given: SubjectIdentifiers) -> list[str]:
        request = dsr.open_request(vault, kind="access", received_at=vault.clock.now(), actor=DPO)
        return sorted(find_subject_studies(vault, request.id, given, actor=DPO).matched)

    def test_search_by_patient_id_and_organisation_finds_both_sources(
        self, two_sources: tuple[Hospital, str, str]
    ) -> None:
        hospital, pacs, cd = two_sources
        given = SubjectIdentifiers(PATIENT.patient_id, organisation_id=hospital.id)
        assert self.search(hospital.vault, given) == sorted([pacs, cd])

    def test_search_with_another_registered_issuer_finds_both_sources(
        self, two_sources: tuple[Hospital, str, str]
    ) -> None:
        hospital, pacs, cd = two_sources
        given = SubjectIdentifiers(PATIENT.patient_id, ("1.2.3.4.5",))
        assert self.search(hospital.vault, given) == sorted([pacs, cd])

    def test_search_in_another_organisation_with_its_own_issuer_finds_only_its_study(
        self, two_sources: tuple[Hospital, str, str], hospital_b: Hospital
    ) -> None:
        hospital = two_sources[0]
        regional = hospital_b.send(on("20230517", "REGION-EAST"), seed=3)
        given = SubjectIdentifiers(PATIENT.patient_id, ("REGION-EAST",), hospital_b.id)
        assert self.search(hospital.vault, given) == [regional]

    def test_reidentification_names_both_sources_behind_the_one_pseudonym(
        self, two_sources: tuple[Hospital, str, str]
    ) -> None:
        hospital, pacs, cd = two_sources
        copies = {pseudonymised(hospital.vault, study).pseudonym for study in (pacs, cd)}
        (one,) = copies
        found = reidentify(hospital.vault, one, actor=DPO, request_ref="DSR-1")
        assert sorted(study.study_id for study in found) == sorted([pacs, cd])


# --- the commands ----------------------------------------------------------------------


class Cli(cli_support.Cli):
    """The shared in-process CLI, and the organisations it made."""

    def organisation_id(self, name: str) -> str:
        with self.session() as session:
            org = session.scalar(select(Organisation).where(Organisation.name == name))
            assert org is not None
            return org.id


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path / "data")
    cli("case", "create", "CASE-A", "--organisation", "Hospital A", "--new-organisation")
    return cli


class TestIssuerCommands:
    def test_add_list_and_remove_are_each_audited(self, cli: Cli) -> None:
        org = ("--organisation", "Hospital A")
        assert "registered for Hospital A" in cli("admin", "add-issuer", "HOSP-A", *org)
        cli("admin", "add-issuer", "1.2.3.4.5", *org)
        listed = cli("admin", "list-issuers")
        assert "Hospital A  issuer='1.2.3.4.5'" in listed and "issuer='HOSP-A'" in listed
        assert "unregistered from Hospital A" in cli("admin", "remove-issuer", "HOSP-A", *org)
        assert "HOSP-A" not in cli("admin", "list-issuers", *org)
        events = cli.audited_family("admin.issuer-")
        assert [(e.action, e.actor, e.object_type) for e in events] == [
            ("admin.issuer-add", cli_actor(), "organisation"),
            ("admin.issuer-add", cli_actor(), "organisation"),
            ("admin.issuer-remove", cli_actor(), "organisation"),
        ]
        assert {e.object_id for e in events} == {cli.organisation_id("Hospital A")}
        assert not [e for e in events if "HOSP" in e.detail or "1.2.3" in e.detail]

    def test_an_unknown_organisation_is_refused_with_its_close_matches(self, cli: Cli) -> None:
        output = cli("admin", "add-issuer", "HOSP-A", "--organisation", "Hospital", code=2)
        assert "no organisation named 'Hospital' (close matches: Hospital A)" in output
        cli("admin", "remove-issuer", "HOSP-A", "--organisation", "Nowhere", code=2)
        cli("admin", "list-issuers", "--organisation", "Nowhere", code=2)
        assert cli.audited_family("admin.issuer-") == []

    @pytest.mark.parametrize(
        ("value", "message"),
        [("X" * 65, "1 to 64 characters"), ("HOSP\x07A", "no control character")],
    )
    def test_a_bad_issuer_is_refused_clearly(self, cli: Cli, value: str, message: str) -> None:
        output = cli("admin", "add-issuer", value, "--organisation", "Hospital A", code=2)
        assert message in output and value not in output
        assert "no issuers registered" in cli("admin", "list-issuers")

    def test_removing_an_issuer_not_registered_is_refused(self, cli: Cli) -> None:
        output = cli("admin", "remove-issuer", "HOSP-A", "--organisation", "Hospital A", code=2)
        assert "has not registered this issuer" in output


class TestOfflineDeidentification:
    @pytest.fixture
    def files(self, tmp_path: Path) -> Path:
        folder = tmp_path / "in"
        write_series(folder, make_ct_series(2, rows=16, columns=16, seed=5, patient=PATIENT))
        return folder

    def pseudonyms_written(self, cli: Cli, files: Path, *extra: str) -> set[str]:
        out = files.parent / f"out{len(extra)}"
        assert "written 2" in cli("deidentify", str(files), "--out", str(out), *extra)
        return {path.relative_to(out).parts[0] for path in out.rglob("*.dcm")}

    def expected(self, cli: Cli, domain: PatientIdDomain) -> str:
        vault = open_vault(Settings(data_dir=cli.data_dir))
        try:
            return pseudonym(
                vault.keyring.provider.mac_key("pseudonym"), PATIENT.patient_id, domain
            )
        finally:
            vault.close()

    def test_organisation_option_gives_the_organisations_pseudonyms(
        self, cli: Cli, files: Path
    ) -> None:
        written = self.pseudonyms_written(cli, files, "--organisation", "Hospital A")
        domain = PatientIdDomain.of_organisation(cli.organisation_id("Hospital A"))
        assert written == {self.expected(cli, domain)}
        (event,) = cli.audited("deidentify.offline")
        assert event.object_id == cli.organisation_id("Hospital A")

    def test_by_default_ids_without_issuer_are_unaffiliated(self, cli: Cli, files: Path) -> None:
        assert self.pseudonyms_written(cli, files) == {self.expected(cli, UNAFFILIATED)}

    def test_an_unknown_organisation_is_refused(self, cli: Cli, files: Path) -> None:
        out = files.parent / "out"
        args = ("deidentify", str(files), "--out", str(out), "--organisation", "Nowhere")
        assert "no organisation named 'Nowhere'" in cli(*args, code=2)
        assert not out.exists()


# --- the catalog -----------------------------------------------------------------------


def test_migrations_create_exactly_the_issuer_model(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    migrate(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert [d for d in diff if OrganisationIssuer.__tablename__ in repr(d)] == []


def test_the_issuer_migration_downgrades_to_its_base(tmp_path: Path) -> None:
    from alembic import command

    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    migrate(engine)
    command.downgrade(alembic_config(engine), "0008i_organisation_issuers@-1")
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert OrganisationIssuer.__tablename__ not in tables
    assert "organisations" in tables
