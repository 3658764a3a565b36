"""The vault core end to end: ingest, store encrypted, read back, rotate, shred.

Every test here runs on each deployment (filesystem + SQLite, SeaweedFS +
PostgreSQL) with each key provider (local, pkcs11, transit).
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from sqlalchemy import inspect, select, text

from crypto.errors import IntegrityError, KeyDestroyedError
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.services.vault_env import CaseContext
from vault.catalog.models import DataKeyRecord, Instance, Study
from vault.core import Vault
from vault.errors import ConflictingResend, NotDicom
from vault.reader import open_instance

PATIENT = SyntheticPatient()


def series_bytes(n: int = 3, *, seed: int = 0, plant_phi: bool = False) -> list[bytes]:
    return [
        encode(ds) for ds in make_ct_series(n, rows=64, columns=64, seed=seed, plant_phi=plant_phi)
    ]


def ingest_all(case: CaseContext, files: list[bytes]) -> list[str]:
    return [case.pipeline.ingest(io.BytesIO(f), case.origin).instance_id for f in files]


def read_back(vault: Vault, instance_id: str) -> bytes:
    with open_instance(vault, instance_id) as stream:
        return stream.read()


def all_stored_bytes(vault: Vault) -> bytes:
    chunks = []
    for key in vault.store.iter_keys():
        with vault.store.open_reader(key) as reader:
            chunks.append(reader.read())
    return b"".join(chunks)


def catalog_dump(vault: Vault) -> bytes:
    """Every row of every catalog table, as text, plus the SQLite files' raw bytes."""
    engine = vault.catalog.engine
    parts: list[bytes] = []
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                parts.append(repr(tuple(row)).encode())
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database:
        for suffix in ("", "-wal"):
            try:
                with open(database + suffix, "rb") as raw:
                    parts.append(raw.read())
            except FileNotFoundError:
                pass
    return b"\n".join(parts)


class TestRoundTrip:
    def test_instances_read_back_bit_exact(self, case: CaseContext) -> None:
        files = series_bytes(3)
        ids = ingest_all(case, files)
        assert [read_back(case.vault, i) for i in ids] == files

    def test_catalog_records_sha256_and_size_of_plaintext(self, case: CaseContext) -> None:
        data = series_bytes(1)[0]
        result = case.pipeline.ingest(io.BytesIO(data), case.origin)
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        assert result.size == len(data)

    def test_one_data_key_per_study(self, case: CaseContext) -> None:
        ingest_all(case, series_bytes(3, seed=1) + series_bytes(2, seed=2))
        with case.vault.catalog.session() as session:
            studies = session.scalars(select(Study)).all()
            keys_per_study = {
                s.id: set(session.scalars(select(Instance.key_id).where(Instance.study_id == s.id)))
                for s in studies
            }
        assert len(studies) == 2
        assert all(keys == {s.data_key_id} for s in studies for keys in [keys_per_study[s.id]])


class TestResend:
    def test_same_instance_twice_is_stored_once(self, case: CaseContext) -> None:
        data = series_bytes(1)[0]
        first = case.pipeline.ingest(io.BytesIO(data), case.origin)
        objects = sorted(case.vault.store.iter_keys())
        second = case.pipeline.ingest(io.BytesIO(data), case.origin)
        assert second.duplicate and not first.duplicate
        assert second.instance_id == first.instance_id
        assert sorted(case.vault.store.iter_keys()) == objects

    def test_conflicting_resend_is_refused_and_nothing_stored(self, case: CaseContext) -> None:
        original = next(make_ct_series(1, rows=64, columns=64))
        case.pipeline.ingest(io.BytesIO(encode(original)), case.origin)
        objects = sorted(case.vault.store.iter_keys())
        original.PixelData = bytes(len(original.PixelData))
        with pytest.raises(ConflictingResend):
            case.pipeline.ingest(io.BytesIO(encode(original)), case.origin)
        assert sorted(case.vault.store.iter_keys()) == objects
        with case.vault.catalog.session() as session:
            assert session.scalar(select(Study.instance_count)) == 1


class TestNothingInClear:
    def test_planted_identifiers_never_reach_store_or_catalog(self, case: CaseContext) -> None:
        files = series_bytes(2, plant_phi=True)
        ingest_all(case, files)
        datasets = list(make_ct_series(1, rows=64, columns=64, plant_phi=True))
        uids = [str(datasets[0].StudyInstanceUID), str(datasets[0].SOPInstanceUID)]
        stored, catalog = all_stored_bytes(case.vault), catalog_dump(case.vault)
        assert stored and catalog
        for marker in [*PATIENT.markers(), *uids]:
            for variant in {marker, marker.upper(), marker.lower()}:
                needle = variant.encode()
                assert needle not in stored, "a planted identifier is in the object store"
                assert needle not in catalog, "a planted identifier is in the catalog"

    def test_object_keys_carry_no_identifier(self, case: CaseContext) -> None:
        ingest_all(case, series_bytes(1, plant_phi=True))
        for key in case.vault.store.iter_keys():
            assert key.startswith("obj/")
            assert all(m.lower() not in key.lower() for m in PATIENT.markers())


class TestKeyRotation:
    def test_rotate_and_rewrap_keep_every_object_readable(self, case: CaseContext) -> None:
        files = series_bytes(2)
        ids = ingest_all(case, files)
        keyring = case.vault.keyring
        old_kek = keyring.provider.current_kek_id()
        new_kek = keyring.provider.rotate()
        assert new_kek != old_kek
        objects_before = {k: case.vault.store.size(k) for k in case.vault.store.iter_keys()}
        report = keyring.rewrap_all()
        assert report.rewrapped == 1
        with case.vault.catalog.session() as session:
            assert set(session.scalars(select(DataKeyRecord.kek_id))) == {new_kek}
        assert {k: case.vault.store.size(k) for k in case.vault.store.iter_keys()} == objects_before
        assert [read_back(case.vault, i) for i in ids] == files

    def test_new_studies_after_rotation_use_the_new_kek(self, case: CaseContext) -> None:
        new_kek = case.vault.keyring.provider.rotate()
        ingest_all(case, series_bytes(1, seed=5))
        with case.vault.catalog.session() as session:
            assert session.scalar(select(DataKeyRecord.kek_id)) == new_kek


class TestCryptoShredding:
    def test_destroyed_study_key_makes_objects_unreadable(self, case: CaseContext) -> None:
        ids = ingest_all(case, series_bytes(2))
        with case.vault.catalog.session() as session:
            key_id = session.scalar(select(Study.data_key_id))
            case.vault.keyring.destroy(key_id, session=session)
        for instance_id in ids:
            with pytest.raises(KeyDestroyedError, match="destroyed"):
                read_back(case.vault, instance_id)
        with case.vault.catalog.session() as session:
            record = session.get(DataKeyRecord, key_id)
            assert record.wrapped is None and record.destroyed_at is not None


class TestTampering:
    def test_flipped_byte_in_stored_object_is_an_integrity_failure(self, case: CaseContext) -> None:
        (instance_id,) = ingest_all(case, series_bytes(1))
        with case.vault.catalog.session() as session:
            row = session.get(Instance, instance_id)
            object_key = row.object_key
        with case.vault.store.open_reader(object_key) as reader:
            blob = bytearray(reader.read())
        blob[len(blob) // 2] ^= 0x01
        case.vault.store.delete(object_key)
        with case.vault.store.open_writer(object_key) as writer:
            writer.write(bytes(blob))
        with pytest.raises(IntegrityError):
            read_back(case.vault, instance_id)


class TestAccessLog:
    def test_stores_and_refusals_are_recorded_without_phi(self, case: CaseContext) -> None:
        files = series_bytes(1, plant_phi=True)
        ingest_all(case, files)
        with pytest.raises(NotDicom):
            case.pipeline.ingest(io.BytesIO(b"not dicom at all" * 20), case.origin)
        events = list(case.vault.audit.events())
        assert [(e.action, e.outcome) for e in events] == [
            ("instance.store", "success"),
            ("instance.store", "refused:not-dicom"),
        ]
        text_of_log = json.dumps([e.detail for e in events]) + repr([e.object_id for e in events])
        assert all(m not in text_of_log for m in PATIENT.markers())
        assert case.vault.audit.verify() == []
