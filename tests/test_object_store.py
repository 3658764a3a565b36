"""The object stores keep their contract: whole objects or nothing, random keys.

Every test taking ``object_store`` runs against the filesystem store and
against S3 (SeaweedFS, 5 MiB parts, so 12 MiB makes a three-part upload).
"""

from __future__ import annotations

import gc
import inspect
import os
import random
import re
import socket
import stat
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from pydantic import SecretStr

from tests.services.stores import empty_and_remove_bucket
from vault.errors import NotFound, StorageUnavailable
from vault.settings import S3StoreSettings, StoreSettings
from vault.store import ObjectStore, build_store, new_object_key
from vault.store.filesystem import TEMP_PREFIX, FilesystemObjectStore
from vault.store.s3 import S3ObjectStore, minio_client

MiB = 1024 * 1024
KEY_PATTERN = re.compile(r"obj/([0-9a-f]{2})/\1[0-9a-f]{30}")
ESCAPING_KEYS = [
    "../outside",
    "obj/../../outside",
    "/etc/passwd",
    "obj//x",
    "obj/./x",
    ".tmp-x",
    "obj/.hidden",
    "",
    "obj/x\n",
    "obj/é",
    "obj\\..\\x",
]


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def write_in_chunks(writer, data: bytes, chunk: int = MiB + 7) -> None:
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])


def read_all(store: ObjectStore, key: str) -> bytes:
    with store.open_reader(key) as reader:
        return reader.read()


@pytest.fixture
def leftovers(object_store: ObjectStore, request: pytest.FixtureRequest) -> Callable[[], list]:
    """Lists everything the store's backend holds, committed or partial.

    Filesystem: every file under the root (temporary files included).
    S3: every object and every incomplete multipart upload of the bucket.
    """
    if isinstance(object_store, FilesystemObjectStore):
        root = object_store.root

        def files() -> list:
            return [Path(d, f) for d, _, names in os.walk(root) for f in names]

        return files
    client: Minio = request.getfixturevalue("s3_admin")
    bucket = object_store.bucket

    def objects_and_uploads() -> list:
        objects = [o.object_name for o in client.list_objects(bucket, recursive=True)]
        uploads = [u.upload_id for u in client._list_multipart_uploads(bucket).uploads]
        return objects + uploads

    return objects_and_uploads


class TestRoundTrip:
    @pytest.mark.parametrize("size", [0, 1, 4097, 12 * MiB], ids=["empty", "1B", "4KiB", "12MiB"])
    def test_committed_object_reads_back_byte_for_byte(self, object_store, size):
        data = payload(size)
        with object_store.open_writer() as writer:
            write_in_chunks(writer, data)
        assert read_all(object_store, writer.key) == data
        assert object_store.size(writer.key) == size
        assert object_store.exists(writer.key)
        assert list(object_store.iter_keys()) == [writer.key]

    def test_write_accepts_bytearray_and_memoryview_and_returns_length(self, object_store):
        with object_store.open_writer() as writer:
            assert writer.write(bytearray(b"abc")) == 3
            assert writer.write(memoryview(b"defg")) == 4
        assert read_all(object_store, writer.key) == b"abcdefg"

    def test_reader_reads_in_pieces(self, object_store):
        data = payload(3 * MiB)
        with object_store.open_writer() as writer:
            writer.write(data)
        pieces = []
        with object_store.open_reader(writer.key) as reader:
            while piece := reader.read(100_003):
                pieces.append(piece)
        assert b"".join(pieces) == data

    def test_store_satisfies_the_protocol(self, object_store):
        assert isinstance(object_store, ObjectStore)


class TestS3Multipart:
    def test_object_larger_than_a_part_is_uploaded_in_parts(self, s3_store, s3_admin):
        data = payload(12 * MiB)
        with s3_store.open_writer() as writer:
            write_in_chunks(writer, data)
        etag = s3_admin.stat_object(s3_store.bucket, writer.key).etag
        assert etag.endswith("-3")  # S3 multipart ETag: md5 of part md5s, dash, part count
        assert read_all(s3_store, writer.key) == data

    def test_object_smaller_than_a_part_is_a_single_put(self, s3_store, s3_admin):
        with s3_store.open_writer() as writer:
            writer.write(b"small")
        assert "-" not in s3_admin.stat_object(s3_store.bucket, writer.key).etag

    def test_object_above_the_s3_minimum_but_below_a_part_is_a_single_put(
        self, s3_store, s3_admin, seaweedfs_s3
    ):
        large_parts = S3ObjectStore(minio_client(seaweedfs_s3), s3_store.bucket, part_size=16 * MiB)
        data = payload(11 * MiB)
        with large_parts.open_writer() as writer:
            write_in_chunks(writer, data)
        assert "-" not in s3_admin.stat_object(s3_store.bucket, writer.key).etag
        assert read_all(s3_store, writer.key) == data


class TestNothingVisibleBeforeCommit:
    @pytest.mark.parametrize("size", [10, 6 * MiB], ids=["small", "more-than-a-part"])
    def test_object_appears_only_on_commit(self, object_store, size):
        writer = object_store.open_writer()
        writer.write(payload(size))
        assert not object_store.exists(writer.key)
        assert list(object_store.iter_keys()) == []
        with pytest.raises(NotFound):
            object_store.open_reader(writer.key)
        writer.commit()
        assert object_store.exists(writer.key)


class TestAbort:
    @pytest.mark.parametrize("size", [0, 10, 12 * MiB], ids=["empty", "small", "several-parts"])
    def test_abort_leaves_nothing(self, object_store, leftovers, size):
        writer = object_store.open_writer()
        write_in_chunks(writer, payload(size))
        writer.abort()
        assert leftovers() == []
        assert not object_store.exists(writer.key)

    def test_abort_twice_and_after_commit_changes_nothing(self, object_store):
        aborted = object_store.open_writer()
        aborted.abort()
        aborted.abort()
        with object_store.open_writer() as committed:
            committed.write(b"kept")
        committed.abort()
        assert read_all(object_store, committed.key) == b"kept"

    def test_writer_refuses_use_after_abort(self, object_store):
        writer = object_store.open_writer()
        writer.abort()
        with pytest.raises(ValueError, match="aborted"):
            writer.write(b"x")
        with pytest.raises(ValueError, match="aborted"):
            writer.commit()


class TestExceptionInsideWith:
    @pytest.mark.parametrize("size", [10, 12 * MiB], ids=["small", "several-parts"])
    def test_exception_aborts_and_propagates(self, object_store, leftovers, size):
        class UploadInterrupted(Exception):
            pass

        with pytest.raises(UploadInterrupted), object_store.open_writer() as writer:
            write_in_chunks(writer, payload(size))
            raise UploadInterrupted
        assert leftovers() == []
        assert not object_store.exists(writer.key)


class TestGarbageCollectedWriter:
    @pytest.mark.parametrize("size", [10, 6 * MiB], ids=["small", "more-than-a-part"])
    def test_uncommitted_writer_collected_leaves_nothing(self, object_store, leftovers, size):
        writer = object_store.open_writer()
        writer.write(payload(size))
        del writer
        gc.collect()
        assert leftovers() == []


class TestMissingKey:
    def test_reading_a_missing_key_raises_not_found(self, object_store):
        with pytest.raises(NotFound):
            object_store.open_reader(new_object_key())

    def test_size_of_a_missing_key_raises_not_found(self, object_store):
        with pytest.raises(NotFound):
            object_store.size(new_object_key())

    def test_missing_key_does_not_exist(self, object_store):
        assert not object_store.exists(new_object_key())

    def test_a_key_prefix_is_not_an_object(self, object_store):
        with object_store.open_writer() as writer:
            writer.write(b"x")
        prefix = writer.key.rsplit("/", 1)[0]
        assert not object_store.exists(prefix)
        with pytest.raises(NotFound):
            object_store.open_reader(prefix)


class TestDelete:
    def test_delete_removes_and_is_idempotent(self, object_store):
        with object_store.open_writer() as writer:
            writer.write(b"to be deleted")
        object_store.delete(writer.key)
        object_store.delete(writer.key)
        assert not object_store.exists(writer.key)
        with pytest.raises(NotFound):
            object_store.open_reader(writer.key)

    def test_deleting_a_key_never_written_is_not_an_error(self, object_store):
        object_store.delete(new_object_key())
        assert list(object_store.iter_keys()) == []


class TestKeys:
    def test_new_keys_are_random_and_carry_nothing_of_the_content(self, object_store):
        keys = set()
        for _ in range(3):
            with object_store.open_writer() as writer:
                writer.write(b"DOE^JOHN 1.2.840.99999.1")
            keys.add(writer.key)
        assert len(keys) == 3
        assert all(KEY_PATTERN.fullmatch(key) for key in keys)
        assert set(object_store.iter_keys()) == keys

    def test_a_well_formed_caller_key_is_used_as_given(self, object_store):
        with object_store.open_writer("obj/ab/ab-given_key.1") as writer:
            writer.write(b"x")
        assert read_all(object_store, "obj/ab/ab-given_key.1") == b"x"

    @pytest.mark.parametrize("key", ESCAPING_KEYS)
    def test_malformed_keys_are_refused_without_echoing_them(self, object_store, key):
        for attempt in (
            object_store.open_writer,
            object_store.open_reader,
            object_store.size,
            object_store.delete,
        ):
            with pytest.raises(ValueError, match="object key refused") as refused:
                attempt(key)
            assert key == "" or key not in str(refused.value)


class TestFilesystemConfinement:
    def test_nothing_is_written_outside_the_root(self, tmp_path):
        store = FilesystemObjectStore(tmp_path / "objects")
        for key in ESCAPING_KEYS:
            with pytest.raises(ValueError):
                store.open_writer(key)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["objects"]

    def test_a_symlink_out_of_the_root_is_refused(self, tmp_path):
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret").write_bytes(b"not an object")
        store = FilesystemObjectStore(tmp_path / "objects")
        (store.root / "obj").symlink_to(outside)
        with pytest.raises(ValueError, match="outside the store"):
            store.open_reader("obj/secret")
        with pytest.raises(ValueError, match="outside the store"):
            store.open_writer("obj/new")
        assert sorted(p.name for p in outside.iterdir()) == ["secret"]


class TestFilesystemPermissions:
    def test_temp_file_object_and_directories_are_private(self, filesystem_store):
        writer = filesystem_store.open_writer()
        writer.write(b"x")
        directory = filesystem_store.root / writer.key.rsplit("/", 1)[0]
        (temp,) = directory.iterdir()
        assert temp.name.startswith(TEMP_PREFIX)
        assert stat.S_IMODE(temp.stat().st_mode) == 0o600
        writer.commit()
        assert stat.S_IMODE((filesystem_store.root / writer.key).stat().st_mode) == 0o600
        for level in (directory, directory.parent):
            assert stat.S_IMODE(level.stat().st_mode) == 0o700

    def test_temp_file_name_carries_nothing_of_the_key(self, filesystem_store):
        writer = filesystem_store.open_writer("obj/ab/ab-named")
        (temp,) = (filesystem_store.root / "obj" / "ab").iterdir()
        assert "named" not in temp.name
        writer.abort()


class TestFilesystemStaleTempFiles:
    def test_only_old_temp_files_are_swept(self, filesystem_store):
        with filesystem_store.open_writer() as writer:
            writer.write(b"kept")
        directory = (filesystem_store.root / writer.key).parent
        old, fresh = directory / f"{TEMP_PREFIX}old", directory / f"{TEMP_PREFIX}fresh"
        old.write_bytes(b"left by a crash")
        fresh.write_bytes(b"still being written")
        os.utime(old, (0, 0))
        assert filesystem_store.remove_stale_temp_files(older_than_seconds=3600) == 1
        assert sorted(p.name for p in directory.iterdir()) == sorted(
            [fresh.name, writer.key.rsplit("/", 1)[1]]
        )
        assert list(filesystem_store.iter_keys()) == [writer.key]


class TestBoundedMemory:
    def test_writer_memory_stays_near_one_part_whatever_the_size(self, object_store):
        chunk = payload(MiB)
        tracemalloc.start()
        try:
            with object_store.open_writer() as writer:
                for _ in range(24):
                    writer.write(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert object_store.size(writer.key) == 24 * MiB
        assert peak < 3 * 5 * MiB  # three 5 MiB parts; an unbounded buffer would hold 24 MiB


class TestS3PartFailure:
    """Fault injection: the server is real, one call of the client is made to fail."""

    def test_part_failing_midway_aborts_the_upload(self, s3_store, s3_admin, monkeypatch):
        real_upload_part = s3_store._client._upload_part
        calls = []

        def second_part_fails(*args):
            calls.append(args[-1])
            if len(calls) == 2:
                raise urllib3.exceptions.ProtocolError("connection reset")
            return real_upload_part(*args)

        monkeypatch.setattr(s3_store._client, "_upload_part", second_part_fails)
        writer = s3_store.open_writer()
        with pytest.raises(StorageUnavailable):
            write_in_chunks(writer, payload(12 * MiB))
        assert calls == [1, 2]
        assert s3_admin._list_multipart_uploads(s3_store.bucket).uploads == []
        assert list(s3_admin.list_objects(s3_store.bucket, recursive=True)) == []
        with pytest.raises(ValueError, match="aborted"):
            writer.write(b"more")

    def test_complete_failing_aborts_the_upload(self, s3_store, s3_admin, monkeypatch):
        def complete_fails(*args, **kwargs):
            raise urllib3.exceptions.ProtocolError("connection reset")

        monkeypatch.setattr(s3_store._client, "_complete_multipart_upload", complete_fails)
        with pytest.raises(StorageUnavailable), s3_store.open_writer() as writer:
            write_in_chunks(writer, payload(6 * MiB))
        assert s3_admin._list_multipart_uploads(s3_store.bucket).uploads == []
        assert not s3_store.exists(writer.key)


class TestS3Unreachable:
    @pytest.fixture
    def unreachable(self) -> S3StoreSettings:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return S3StoreSettings(
            endpoint=f"127.0.0.1:{port}", access_key="a", secret_key="b", retries=0
        )

    def test_building_the_store_reports_storage_unavailable(self, unreachable):
        with pytest.raises(StorageUnavailable, match="could not"):
            build_store(StoreSettings(kind="s3", s3=unreachable))

    def test_every_call_reports_storage_unavailable(self, unreachable):
        store = S3ObjectStore(minio_client(unreachable), unreachable.bucket)
        key = new_object_key()
        for attempt in (store.open_reader, store.size, store.exists, store.delete):
            with pytest.raises(StorageUnavailable):
                attempt(key)
        with pytest.raises(StorageUnavailable):
            store.open_writer().commit()


class TestS3Credentials:
    def test_wrong_secret_is_refused(self, seaweedfs_s3):
        wrong_secret = SecretStr("not-the-secret")
        wrong = seaweedfs_s3.model_copy(update={"secret_key": wrong_secret, "retries": 0})
        with pytest.raises(StorageUnavailable, match="SignatureDoesNotMatch"):
            S3ObjectStore.from_settings(wrong)


class TestS3ObjectLock:
    def test_plain_bucket_has_no_object_lock(self, s3_store):
        assert s3_store.supports_object_lock() is False

    def test_bucket_created_with_object_lock_reports_it(self, seaweedfs_s3, s3_admin):
        settings = seaweedfs_s3.model_copy(update={"bucket": "test-locked", "object_lock": True})
        store = S3ObjectStore.from_settings(settings)
        try:
            assert store.supports_object_lock() is True
        finally:
            empty_and_remove_bucket(s3_admin, store.bucket)


class TestBuildStore:
    def test_filesystem_settings_build_a_filesystem_store(self, tmp_path):
        settings = StoreSettings(filesystem={"root": tmp_path / "objects"})
        store = build_store(settings)
        assert isinstance(store, FilesystemObjectStore)
        assert store.root == tmp_path / "objects"
        assert stat.S_IMODE(store.root.stat().st_mode) == 0o700

    def test_s3_settings_build_an_s3_store_and_create_its_bucket(self, seaweedfs_s3, s3_admin):
        settings = StoreSettings(kind="s3", s3=seaweedfs_s3.model_copy(update={"bucket": "tbs"}))
        assert not s3_admin.bucket_exists("tbs")
        store = build_store(settings)
        try:
            assert isinstance(store, S3ObjectStore)
            assert s3_admin.bucket_exists("tbs")
        finally:
            empty_and_remove_bucket(s3_admin, "tbs")

    def test_filesystem_without_root_is_refused(self):
        with pytest.raises(ValueError, match="root"):
            build_store(StoreSettings())


class TestMinioInterface:
    """The store calls minio's underscore multipart methods; pin their shape."""

    @pytest.mark.parametrize(
        ("method", "parameters"),
        [
            ("_create_multipart_upload", ["bucket_name", "object_name", "headers"]),
            (
                "_upload_part",
                ["bucket_name", "object_name", "data", "headers", "upload_id", "part_number"],
            ),
            ("_complete_multipart_upload", ["bucket_name", "object_name", "upload_id", "parts"]),
            ("_abort_multipart_upload", ["bucket_name", "object_name", "upload_id"]),
        ],
    )
    def test_multipart_method_takes_positional_arguments_in_order(self, method, parameters):
        signature = inspect.signature(getattr(Minio, method))
        positional = [
            p.name
            for p in signature.parameters.values()
            if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"
        ]
        assert positional[: len(parameters)] == parameters
