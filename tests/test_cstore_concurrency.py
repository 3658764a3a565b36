"""Several senders at once: concurrent associations, and several receiver processes.

``scp.processes`` > 1 runs that many receiver processes on one listening
socket; each new association goes to the process with the fewest open ones
(:class:`~dicom_ingest._scp_transport.AcceptBalance`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

import psutil
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage

from dicom_ingest._scp_processes import (
    STABLE_SECONDS,
    ReceiverGroup,
    ReceiverProcesses,
    RestartBackoff,
)
from dicom_ingest._scp_transport import STALE_SECONDS, AcceptBalance
from dicom_ingest.synthetic import write_series
from tests.cstore_support import (
    held_connections,
    instance_count,
    receivers_on_one_socket,
    small_series,
    studies,
)
from tests.services.dicom_peers import (
    Dcmtk,
    Receiver,
    free_port,
    nodelay_env,
    receiver_processes,
    wait_until_serving,
)
from tests.test_cstore_cli import wait_for_echo
from vault.core import open_vault
from vault.errors import ReceiverNotStarted
from vault.settings import ScpSettings, Settings
from vault.settle import IdleSettler

CLI = Path(sys.executable).with_name("dicom-vault")
SENDERS = 3
MAX_ASSOCIATIONS = 32


class TestConcurrentAssociations:
    def test_parallel_storescu_senders_are_all_stored_with_an_intact_access_log(
        self, dcmtk: Dcmtk, receiver: Receiver, tmp_path: Path
    ) -> None:
        batches = [
            write_series(tmp_path / f"in{n}", small_series(4, seed=60 + n)) for n in range(SENDERS)
        ]
        argv = [str(dcmtk.storescu), "-aet", "PACS1", "-aec", receiver.ae_title]
        argv += [receiver.host, str(receiver.port)]
        senders = [
            subprocess.Popen([*argv, *map(str, files)], env=nodelay_env(), stderr=subprocess.PIPE)
            for files in batches
        ]
        codes = [sender.wait(timeout=120) for sender in senders]
        errors = [sender.stderr.read().decode(errors="replace")[-800:] for sender in senders]  # type: ignore[union-attr]
        assert codes == [0] * SENDERS, errors
        assert instance_count(receiver.vault) == 4 * SENDERS
        assert sorted(s.instance_count for s in studies(receiver.vault)) == [4] * SENDERS
        assert receiver.vault.audit.verify() == []


def _owner(listeners: list[psutil.Process], port: int, client_port: int) -> int | None:
    """The pid of the receiver process holding our connection's server end."""
    for process in listeners:
        for connection in process.net_connections(kind="tcp"):
            laddr, raddr = connection.laddr, connection.raddr
            if laddr and raddr and laddr.port == port and raddr.port == client_port:
                return process.pid
    return None


def _two_processes(tmp_path: Path, port: int, **scp: str) -> dict[str, str]:
    """The environment of a two-process receiver on ``port`` (more ``scp`` settings)."""
    settings = {"PORT": str(port), "PROCESSES": "2", **scp}
    return {
        **os.environ,
        "DICOM_VAULT_DATA_DIR": str(tmp_path / "var"),
        **{f"DICOM_VAULT_SCP__{name}": value for name, value in settings.items()},
    }


def _add_pacs(env: dict[str, str]) -> None:
    add = [
        str(CLI),
        "pacs",
        "add",
        "PACS1",
        "--organisation",
        "Demo Hospital",
        "--new-organisation",
    ]
    subprocess.run(add, env=env, check=True, capture_output=True)


def _store_over_two_associations(port: int, seed: int) -> list[int]:
    """The statuses of one new instance sent over each of two associations."""
    opened = [_open(port) for _ in range(2)]
    try:
        return [
            assoc.send_c_store(ds).Status
            for n, assoc in enumerate(opened)
            for ds in small_series(1, seed=seed + n)
        ]
    finally:
        for assoc in opened:
            assoc.release()


def _open(port: int) -> Association:
    ae = AE(ae_title="PACS1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    return ae.associate("127.0.0.1", port, ae_title="DICOMVAULT")


class TestAcceptBalance:
    def test_the_least_loaded_process_accepts(self) -> None:
        counts, beats = [0, 0], [0.0, 0.0]
        first, second = AcceptBalance(counts, beats, 0), AcceptBalance(counts, beats, 1)
        second.publish(1)
        assert first.may_accept(1)
        assert not first.may_accept(2)
        assert second.may_accept(1)

    def test_a_sibling_that_stopped_publishing_is_left_out(self) -> None:
        counts, beats = [5, 0], [0.0, 0.0]
        busy = AcceptBalance(counts, beats, 0)
        AcceptBalance(counts, beats, 1).publish(0)
        assert not busy.may_accept(5)
        beats[1] -= STALE_SECONDS + 1
        assert busy.may_accept(5)

    def test_a_count_is_raised_on_accept_and_lowered_when_published(self) -> None:
        counts, beats = [0, 0], [0.0, 0.0]
        balance = AcceptBalance(counts, beats, 1)
        balance.accepted(3)
        assert counts == [0, 3]
        balance.publish(1)
        assert counts == [0, 1]


class TestRestartBackoff:
    def test_a_child_that_keeps_dying_at_once_waits_ever_longer_up_to_a_minute(self) -> None:
        backoff = RestartBackoff(2)
        delays = [backoff.delay(0, lived=1.0) for _ in range(9)]
        assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
        assert backoff.delay(1, lived=1.0) == 1  # each slot counts its own

    def test_a_child_that_ran_for_a_while_is_restarted_after_a_second(self) -> None:
        backoff = RestartBackoff(1)
        for _ in range(5):
            backoff.delay(0, lived=1.0)
        assert backoff.delay(0, lived=STABLE_SECONDS + 1) == 1


_HANGS_WHILE_STOPPING = """
import threading, time
from dicom_ingest._scp_processes import bound_the_stop
threading.Thread(target=time.sleep, args=(60,), name="stuck-association").start()
bound_the_stop(0.5)
time.sleep(60)
"""


class TestStopping:
    def test_a_receiver_that_hangs_while_stopping_ends_itself_and_prints_its_stacks(
        self,
    ) -> None:
        run = [sys.executable, "-c", _HANGS_WHILE_STOPPING]
        done = subprocess.run(run, capture_output=True, text=True, timeout=50)
        assert done.returncode == 1
        assert "Timeout (0:00:00.500000)!" in done.stderr
        assert "time.sleep" in done.stderr or "<string>" in done.stderr


class TestOneSocketTwoReceivers:
    def test_held_associations_are_split_evenly_between_receivers(self, receiver: Receiver) -> None:
        settings = ScpSettings(port=0, settle_check_seconds=3600)
        opened: list[Association] = []
        with receivers_on_one_socket(receiver.vault, settings) as (port, scps):
            try:
                opened = [_open(port) for _ in range(4)]
                assert all(assoc.is_established for assoc in opened)
                held = held_connections(scps)
                statuses = [opened[0].send_c_store(ds).Status for ds in small_series(1, seed=80)]
            finally:
                for assoc in opened:
                    assoc.release()
        assert held == [2, 2]
        assert statuses == [0]
        assert instance_count(receiver.vault) == 1


class TestSeveralProcesses:
    def test_two_processes_share_the_port_and_both_store(
        self, dcmtk: Dcmtk, tmp_path: Path
    ) -> None:
        port = free_port()
        env = _two_processes(tmp_path, port, MAX_ASSOCIATIONS=str(MAX_ASSOCIATIONS))
        _add_pacs(env)
        process = subprocess.Popen([str(CLI), "scp"], env=env, stdout=subprocess.PIPE, text=True)
        opened: list[Association] = []
        try:
            wait_until_serving(process)
            wait_for_echo(dcmtk, port, process)
            listeners = [psutil.Process(pid) for pid in receiver_processes(process.pid, port, 2)]
            owners: dict[int, Association] = {}
            while len(owners) < 2 and len(opened) < MAX_ASSOCIATIONS:
                assoc = _open(port)
                assert assoc.is_established
                opened.append(assoc)
                client_port = assoc.dul.socket.socket.getsockname()[1]
                owner = _owner(listeners, port, client_port)
                owners.setdefault(owner or 0, assoc)
            statuses = [
                assoc.send_c_store(ds).Status
                for seed, assoc in enumerate(owners.values())
                for ds in small_series(2, seed=70 + seed)
            ]
        finally:
            for assoc in opened:
                assoc.release()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        assert len(listeners) == 2
        assert set(owners) == {child.pid for child in listeners}
        assert statuses == [0] * 4
        assert process.returncode == 0
        vault = open_vault(Settings(data_dir=tmp_path / "var"))
        try:
            assert instance_count(vault) == 4
            assert vault.audit.verify() == []
        finally:
            vault.close()

    def test_tls_files_that_cannot_be_read_stop_the_command_before_any_process_starts(
        self, tmp_path: Path
    ) -> None:
        env = _two_processes(
            tmp_path,
            free_port(),
            TLS_CERT=str(tmp_path / "missing-cert.pem"),
            TLS_KEY=str(tmp_path / "missing-key.pem"),
        )
        done = subprocess.run(
            [str(CLI), "scp"], env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 2
        assert f"scp.tls_cert ({tmp_path / 'missing-cert.pem'}) cannot be read" in done.stderr
        assert "Traceback" not in done.stderr
        assert "DICOM receiver ready" not in done.stdout

    def test_a_receiver_process_that_exits_while_starting_fails_the_start_and_frees_the_port(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Fault injection: the second child exits at once instead of serving.
        port = free_port()
        settings = Settings(data_dir=tmp_path / "var", scp=ScpSettings(port=port, processes=2))
        real_start = ReceiverProcesses._start_child

        def second_child_fails(self: ReceiverProcesses, slot: int) -> BaseProcess:
            if slot == 0:
                return real_start(self, slot)
            child = multiprocessing.get_context("spawn").Process(target=os._exit, args=(3,))
            child.start()
            return child

        monkeypatch.setattr(ReceiverProcesses, "_start_child", second_child_fails)
        vault = open_vault(settings)
        try:
            group = ReceiverGroup(settings, IdleSettler.from_settings(vault, settings.scp))
            with pytest.raises(ReceiverNotStarted, match="exited during start-up"):
                group.start()
        finally:
            vault.close()
        assert all(child.exitcode is not None for child in group.processes.children)
        with socket.create_server(("127.0.0.1", port)):
            pass  # nobody holds the port any more

    def test_a_receiver_process_that_dies_is_replaced_and_the_port_keeps_serving(
        self, dcmtk: Dcmtk, tmp_path: Path
    ) -> None:
        port = free_port()
        env = _two_processes(tmp_path, port)
        _add_pacs(env)
        process = subprocess.Popen([str(CLI), "scp"], env=env, stdout=subprocess.PIPE, text=True)
        try:
            wait_until_serving(process)
            first = receiver_processes(process.pid, port, 2)
            os.kill(first[0], signal.SIGKILL)
            replaced = _replaced(process.pid, port, set(first))
            statuses = _store_over_two_associations(port, seed=90)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        assert first[1] in replaced and first[0] not in replaced
        assert statuses == [0, 0]
        assert process.returncode == 0

    def test_serve_runs_the_configured_receiver_processes_beside_the_api(
        self, tmp_path: Path
    ) -> None:
        port, api_port = free_port(), free_port()
        env = _two_processes(tmp_path, port)
        _add_pacs(env)
        serve = [str(CLI), "serve", "--host", "127.0.0.1", "--port", str(api_port)]
        process = subprocess.Popen(serve, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None
            announced = process.stdout.readline()
            children = [psutil.Process(pid) for pid in receiver_processes(process.pid, port, 2)]
            statuses = _store_over_two_associations(port, seed=95)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        assert "2 processes" in announced
        assert len(children) == 2
        assert statuses == [0, 0]
        assert process.returncode == 0  # it stopped them itself, then ended
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == []

    def test_receiver_processes_end_when_their_parent_is_killed(self, tmp_path: Path) -> None:
        port = free_port()
        env = _two_processes(tmp_path, port)
        process = subprocess.Popen([str(CLI), "scp"], env=env, stdout=subprocess.PIPE, text=True)
        try:
            wait_until_serving(process)
            children = [psutil.Process(pid) for pid in receiver_processes(process.pid, port, 2)]
        finally:
            process.kill()
            process.wait(timeout=60)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert alive == []


def _replaced(pid: int, port: int, before: set[int], timeout: float = 120.0) -> list[int]:
    """The listening children once one of ``before`` has been replaced by a new one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = receiver_processes(pid, port, 1)
        if len(now) == 2 and set(now) != before:
            return now
        time.sleep(0.2)
    raise AssertionError("the dead receiver process was not replaced")
