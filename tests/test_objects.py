"""The one encrypted writer and reader, on every object store."""

from __future__ import annotations

import io

import pytest

from crypto.errors import IntegrityError
from crypto.keys import DataKey
from vault.errors import TooLarge
from vault.objects import StoredObject, open_decrypted, write_encrypted
from vault.store import ObjectStore


class TestWriteThenRead:
    @pytest.mark.parametrize("prefix", [b"", b"head:"], ids=["source-only", "with-prefix"])
    def test_round_trip(self, object_store: ObjectStore, prefix: bytes) -> None:
        key = DataKey.generate()
        body = bytes(range(256)) * 5000
        stored = write_encrypted(object_store, key, io.BytesIO(body), limit=10**8, prefix=prefix)
        assert stored.size == len(prefix + body)
        with open_decrypted(object_store, key, stored) as reader:
            assert reader.read() == prefix + body

    def test_empty_object_round_trips(self, object_store: ObjectStore) -> None:
        key = DataKey.generate()
        stored = write_encrypted(object_store, key, io.BytesIO(b""), limit=10)
        with open_decrypted(object_store, key, stored) as reader:
            assert reader.read() == b""


class TestRefusals:
    def test_over_the_limit_leaves_nothing(self, object_store: ObjectStore) -> None:
        with pytest.raises(TooLarge):
            write_encrypted(object_store, DataKey.generate(), io.BytesIO(b"x" * 100), limit=99)
        assert list(object_store.iter_keys()) == []

    def test_failing_last_check_leaves_nothing(self, object_store: ObjectStore) -> None:
        def refuse() -> None:
            raise ValueError("refused by the caller")

        with pytest.raises(ValueError, match="refused"):
            write_encrypted(
                object_store, DataKey.generate(), io.BytesIO(b"x"), limit=9, before_commit=refuse
            )
        assert list(object_store.iter_keys()) == []

    def test_wrong_catalogued_checksum_is_an_integrity_failure(
        self, object_store: ObjectStore
    ) -> None:
        key = DataKey.generate()
        stored = write_encrypted(object_store, key, io.BytesIO(b"payload"), limit=100)
        lying = StoredObject(stored.object_key, stored.key_id, "0" * 64, stored.size)
        with open_decrypted(object_store, key, lying) as reader, pytest.raises(IntegrityError):
            reader.read()

    def test_object_copied_under_another_key_does_not_decrypt(
        self, object_store: ObjectStore
    ) -> None:
        key = DataKey.generate()
        stored = write_encrypted(object_store, key, io.BytesIO(b"payload"), limit=100)
        with object_store.open_reader(stored.object_key) as reader:
            blob = reader.read()
        with object_store.open_writer() as writer:
            writer.write(blob)
            moved_key = writer.key
        moved = StoredObject(moved_key, stored.key_id, stored.sha256, stored.size)
        with open_decrypted(object_store, key, moved) as reader, pytest.raises(IntegrityError):
            reader.read()
