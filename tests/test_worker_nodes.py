"""Several ``dicom-vault worker`` processes on one host and one RabbitMQ broker.

The scale-out deployment runs ``dicom-vault-worker`` and ``dicom-vault-beat``
(and more workers) side by side, on ``amqp://``. RabbitMQ gives each Celery
node an exclusive remote-control queue named after the node, so two workers
under Celery's default name (``celery@<host>``) cannot both start: the second
dies with RESOURCE_LOCKED. Each worker takes a name of its own.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.services._require import missing_service
from tests.services.celery_worker import worker_process

RABBITMQ_URL = os.environ.get("DICOM_VAULT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
READY_SECONDS = 90.0


@pytest.fixture(scope="module")
def amqp_url() -> str:
    """The machine's RabbitMQ, or a skip (a failure under CI) saying why not."""
    from kombu import Connection
    from kombu.exceptions import OperationalError

    try:
        with Connection(RABBITMQ_URL, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
    except (OperationalError, OSError) as exc:
        missing_service("RabbitMQ", f"cannot connect ({type(exc).__name__})")
    return RABBITMQ_URL


def _delete_queue(url: str, name: str) -> None:
    """The workers' queue is durable: leave the machine's broker as it was."""
    from kombu import Connection

    with Connection(url, connect_timeout=5) as connection:
        connection.default_channel.queue_delete(name)


@contextmanager
def started_worker(env: dict[str, str], log: Path, *extra: str) -> Iterator[subprocess.Popen]:
    # beat keeps its schedule file in the working directory: the test's own
    with (
        log.open("wb") as out,
        worker_process(env, *extra, stderr=out, loglevel="INFO", cwd=log.parent) as process,
    ):
        yield process


def wait_ready(process: subprocess.Popen, log: Path) -> str:
    """The worker's log once it says it is ready; fails if it exits first."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if " ready." in text:
            return text
        if process.poll() is not None:
            pytest.fail(f"worker exited with {process.returncode}:\n{text[-2000:]}")
        time.sleep(0.5)
    pytest.fail(f"worker not ready within {READY_SECONDS:.0f} s:\n{log.read_text()[-2000:]}")


@pytest.mark.rabbitmq
def test_two_workers_and_beat_on_one_host_all_start_and_stay(tmp_path, amqp_url):
    env = {
        **os.environ,
        "DICOM_VAULT_DATA_DIR": str(tmp_path / "var"),
        "DICOM_VAULT_CELERY__BROKER_URL": amqp_url,
        "DICOM_VAULT_CELERY__QUEUE": f"worker-nodes-{os.getpid()}",
    }
    env.pop("DICOM_VAULT_CONFIG", None)
    logs = [tmp_path / f"worker-{n}.log" for n in range(3)]
    with ExitStack() as stack:
        stack.callback(_delete_queue, amqp_url, env["DICOM_VAULT_CELERY__QUEUE"])
        processes = [
            stack.enter_context(started_worker(env, logs[0])),
            stack.enter_context(started_worker(env, logs[1])),
            stack.enter_context(started_worker(env, logs[2], "--beat")),
        ]
        texts = [wait_ready(process, log) for process, log in zip(processes, logs, strict=True)]
        time.sleep(3)  # a clash on the remote-control queue comes right after "ready"
        for process, log in zip(processes, logs, strict=True):
            assert process.poll() is None, log.read_text()[-2000:]
    assert not any("ResourceLocked" in text for text in texts)
