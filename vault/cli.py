"""The ``dicom-vault`` command line: thin wiring over the vault's parts.

Every command reads the one settings object (environment and the TOML file
named by ``DICOM_VAULT_CONFIG``), opens the vault, does one thing, and
records what it did in the access log as the person who ran it:
``cli:<account>`` (and ``;operator=<name>`` after ``--operator``; see
:func:`vault.command_support.cli_actor`).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import sqlalchemy.exc
import typer
from sqlalchemy import select

from crypto.errors import KeyProviderError
from vault.audit import AuditRecord
from vault.auth.commands import admin_app
from vault.backup_commands import backup_app, restore
from vault.breach_commands import breach_app
from vault.case_commands import case_app
from vault.command_support import (
    NewOrganisationOption,
    OperatorOption,
    OrganisationOption,
    cli_actor,
    cli_organisation,
    cli_settings,
)
from vault.core import Vault, open_vault
from vault.dsr_commands import dsr_app
from vault.errors import StorageUnavailable, VaultError
from vault.logs import configure_logging
from vault.settings import Settings
from vault.settle import IdleSettler, StudySettledHooks

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from dicom_ingest._scp_processes import ReceiverGroup
    from dicom_ingest.scp import StorageScp
    from vault.catalog.models import PacsNode
    from vault.daily_jobs import DailyRunner

app = typer.Typer(help="dicom-vault: secure DICOM upload service and health-data vault.")
keys_app = typer.Typer(help="Key-encryption keys: rotate and re-wrap.")
audit_app = typer.Typer(help="The access log.")
pacs_app = typer.Typer(help="Hospital PACS allowed to send over DICOM.")
retention_app = typer.Typer(help="Retention: erase studies whose time is up.")
hold_app = typer.Typer(help="Legal holds: keep data needed for a dispute.")
app.add_typer(keys_app, name="keys")
app.add_typer(case_app, name="case")
app.add_typer(audit_app, name="audit")
app.add_typer(pacs_app, name="pacs")
app.add_typer(retention_app, name="retention")
app.add_typer(hold_app, name="hold")
app.add_typer(admin_app, name="admin")
app.add_typer(backup_app, name="backup")
app.command("restore")(restore)
app.add_typer(dsr_app, name="dsr")
app.add_typer(breach_app, name="breach")


@app.callback()
def _operator(operator: OperatorOption = None) -> None:
    """dicom-vault: secure DICOM upload service and health-data vault."""


def _vault() -> Vault:
    return open_vault(cli_settings())


def _fail(exc: VaultError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=2)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address of the web API.")] = None,
    port: Annotated[int | None, typer.Option(help="Port of the web API.")] = None,
    scp: Annotated[
        bool, typer.Option(help="Also run the DICOM C-STORE receiver beside the API.")
    ] = True,
) -> None:
    """Run the service (web API, and the DICOM receiver) on the configured deployment."""
    import uvicorn

    from deidentify.tasks import deidentification_hooks
    from vault.api.app import create_app

    settings = cli_settings()
    configure_logging(settings.log_level)
    hooks = deidentification_hooks(settings)
    _exit_on_sigterm()
    # The receiver's idle timer also settles uploads left unfinished; without
    # it, the API process runs one of its own.
    try:
        background = _start_receiver(settings, hooks) if scp else _start_settler(settings, hooks)
    except VaultError as exc:
        raise _fail(exc) from exc
    daily = _start_daily_jobs(settings)
    workers = settings.api.workers
    try:
        uvicorn.run(
            create_app(settings, settle_hooks=hooks)
            if workers == 1
            else "vault.api.app:create_app_from_environment",
            factory=workers > 1,
            workers=workers,
            timeout_worker_healthcheck=settings.api.worker_healthcheck_seconds,
            host=host or settings.api.host,
            port=port or settings.api.port,
            # The vault's log handler, not uvicorn's: records pass its redaction,
            # and tracebacks lose their messages. Who accessed what is the
            # access log's business, so uvicorn's line per request is off.
            log_config=None,
            access_log=False,
            log_level=settings.log_level,
        )
    finally:
        if daily is not None:
            daily.stop()
        background.stop()


def _start_daily_jobs(settings: Settings) -> DailyRunner | None:
    """Without a broker, the daily jobs (expiry, access-log purge, backup) run
    in this process; with one, Celery beat runs them (``worker --beat``)."""
    from vault.daily_jobs import DailyRunner

    hour = settings.retention.daily_run_hour_utc
    if settings.celery.broker_url is not None:
        typer.echo("daily jobs: on the broker's schedule (run one worker with --beat)")
        return None
    runner = DailyRunner(open_vault(settings), hour_utc=hour)
    runner.start()
    typer.echo(
        f"daily jobs (expiry, access-log purge, backup) in this process at {hour:02d}:00 UTC"
    )
    return runner


def _exit_on_sigterm() -> None:
    """Make SIGTERM end ``serve`` through its ``finally``, which stops the
    receiver and waits for its processes.

    uvicorn handles SIGTERM itself while it serves and raises it again once
    it has shut down; with the default action that second delivery would
    end the process at once, leaving the receiver processes to notice their
    parent's death on their own.
    """

    def exit_cleanly(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_cleanly)


def _start_receiver(settings: Settings, hooks: StudySettledHooks) -> StorageScp | ReceiverGroup:
    """The C-STORE receiver (and the idle-study timer) in background threads,
    or in ``scp.processes`` child processes when that is more than one."""
    from dicom_ingest._scp_processes import ReceiverGroup
    from dicom_ingest.scp import StorageScp

    if settings.scp.processes > 1:
        group = ReceiverGroup(settings, _idle_settler(settings, hooks))
        group.start()
        count, address = settings.scp.processes, f"{settings.scp.bind}:{settings.scp.port}"
        typer.echo(f"DICOM receiver {settings.scp.ae_title} on {address}, {count} processes")
        return group
    receiver = StorageScp(open_vault(settings), settings.scp, hooks=hooks)
    host, port = receiver.start()
    typer.echo(f"DICOM receiver {settings.scp.ae_title} on {host}:{port}")
    return receiver


def _start_settler(settings: Settings, hooks: StudySettledHooks) -> IdleSettler:
    """The idle-study timer alone: uploads never marked complete still settle."""
    settler = _idle_settler(settings, hooks)
    settler.start()
    return settler


def _idle_settler(settings: Settings, hooks: StudySettledHooks) -> IdleSettler:
    """The receiver's timer: idle studies, and pending storage-commitment reports."""
    from dicom_ingest.commitment_retry import receiver_settler

    return receiver_settler(open_vault(settings), settings.scp, hooks)


@app.command("scp")
def scp_command() -> None:
    """Run only the DICOM C-STORE receiver (scp.processes processes) until stopped."""
    from deidentify.tasks import deidentification_hooks
    from dicom_ingest.scp import run_scp

    settings = cli_settings()
    configure_logging(settings.log_level)
    typer.echo(f"DICOM receiver {settings.scp.ae_title} on {settings.scp.bind}:{settings.scp.port}")
    try:
        run_scp(settings, deidentification_hooks(settings), on_ready=_echo_ready)
    except VaultError as exc:
        raise _fail(exc) from exc


def _echo_ready(processes: int) -> None:
    typer.echo(f"DICOM receiver ready: {processes} process(es) serving")


@pacs_app.command("add")
def pacs_add(
    ae_title: str,
    organisation: OrganisationOption,
    host: Annotated[
        str | None, typer.Option(help="Host (or host:port) for commitment reports.")
    ] = None,
    cert_sha256: Annotated[
        str | None, typer.Option(help="SHA-256 of the PACS's TLS client certificate.")
    ] = None,
    new_organisation: NewOrganisationOption = False,
) -> None:
    """Allow a hospital PACS (calling AE title) of an existing organisation to send to the
    DICOM receiver."""
    from vault.admin import register_pacs_node

    def add(vault: Vault, session: Session) -> PacsNode:
        org = cli_organisation(vault, session, organisation, new=new_organisation)
        return register_pacs_node(session, ae_title, org, host=host, cert_sha256=cert_sha256)

    node = _change_pacs_node("pacs.add", add)
    typer.echo(f"PACS node {node.ae_title} added ({node.id})")


def _change_pacs_node(
    action: str,
    change: Callable[[Vault, Session], PacsNode],
    detail: dict[str, str] | None = None,
) -> PacsNode:
    """Run ``change`` and record ``action`` on the node it returns, in one transaction."""
    vault = _vault()
    try:
        with vault.catalog.session() as session:
            node = change(vault, session)
            record = AuditRecord(
                cli_actor(), action, object_type="pacs_node", object_id=node.id, detail=detail or {}
            )
            vault.audit.record(record, session=session)
    except VaultError as exc:
        raise _fail(exc) from exc
    return node


@pacs_app.command("list")
def pacs_list() -> None:
    """List the PACS nodes: AE title, organisation, host, pinned certificate, state."""
    from vault.catalog.models import Organisation, PacsNode

    vault = _vault()
    with vault.catalog.read_session() as session:
        names = {
            row.id: row.name for row in session.execute(select(Organisation.id, Organisation.name))
        }
        nodes = list(session.scalars(select(PacsNode).order_by(PacsNode.ae_title)))
        for node in nodes:
            cert = f"cert={node.cert_sha256[:16]}..." if node.cert_sha256 else "cert=any"
            state = "enabled" if node.enabled else "disabled"
            organisation = names.get(node.organisation_id, "?")
            typer.echo(
                f"{node.ae_title:16s}  {state:8s}  organisation={organisation}  "
                f"host={node.host or '-'}  {cert}  id={node.id}"
            )
    if not nodes:
        typer.echo(
            "no PACS nodes (add one with: dicom-vault pacs add AE_TITLE --organisation NAME"
            " [--new-organisation])"
        )


@pacs_app.command("disable")
def pacs_disable(ae_title: str) -> None:
    """Refuse new associations from a PACS node (open ones run to their end)."""
    _set_pacs_enabled(ae_title, enabled=False)


@pacs_app.command("enable")
def pacs_enable(ae_title: str) -> None:
    """Accept associations from a disabled PACS node again."""
    _set_pacs_enabled(ae_title, enabled=True)


def _set_pacs_enabled(ae_title: str, *, enabled: bool) -> None:
    from vault.admin import set_pacs_node_enabled

    action = "pacs.enable" if enabled else "pacs.disable"
    node = _change_pacs_node(action, lambda _, s: set_pacs_node_enabled(s, ae_title, enabled))
    typer.echo(f"PACS node {node.ae_title} {'enabled' if enabled else 'disabled'}")


@pacs_app.command("update")
def pacs_update(
    ae_title: str,
    host: Annotated[
        str | None, typer.Option(help="Host (or host:port) for commitment reports; '' for none.")
    ] = None,
    cert_sha256: Annotated[
        str | None, typer.Option(help="SHA-256 of the PACS's new TLS client certificate.")
    ] = None,
    clear_cert: Annotated[
        bool, typer.Option(help="Stop requiring a particular client certificate.")
    ] = False,
) -> None:
    """Change a PACS node's host or the client certificate it must present."""
    from vault.admin import update_pacs_node

    wanted = (("host", host is not None), ("cert", bool(cert_sha256) or clear_cert))
    changed = [name for name, given in wanted if given]

    def update(_: Vault, session: Session) -> PacsNode:
        return update_pacs_node(
            session, ae_title, host=host, cert_sha256=cert_sha256, clear_cert=clear_cert
        )

    node = _change_pacs_node("pacs.update", update, {"changed": ",".join(changed)})
    typer.echo(f"PACS node {node.ae_title} updated ({', '.join(changed) or 'nothing changed'})")


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files, folders or ZIP archives.")],
    case: Annotated[str, typer.Option(help="Reference of the case these studies belong to.")],
) -> None:
    """Validate, encrypt and store DICOM files into a case."""
    from dicom_ingest.cli_ingest import ingest_paths

    vault = _vault()
    try:
        summary = ingest_paths(
            vault, paths, case_reference=case, actor=cli_actor(), echo=typer.echo
        )
    except VaultError as exc:
        raise _fail(exc) from exc
    typer.echo(summary.describe())
    if summary.refused:
        raise typer.Exit(code=1)


@app.command("list")
def list_studies(
    case: Annotated[str | None, typer.Option(help="Only this case's studies.")] = None,
) -> None:
    """List stored studies: internal id, case, counts, state, de-identification state."""
    from vault.catalog.deid import PseudonymisedStudy
    from vault.catalog.models import Case, Study

    vault = _vault()
    with vault.catalog.read_session() as session:
        query = (
            select(Study, Case.reference, PseudonymisedStudy.state, PseudonymisedStudy.reason)
            .outerjoin(Case, Study.case_id == Case.id)
            .outerjoin(PseudonymisedStudy, PseudonymisedStudy.study_id == Study.id)
        )
        if case:
            query = query.where(Case.reference == case)
        for study, reference, deid_state, deid_reason in session.execute(
            query.order_by(Study.received_at)
        ):
            deid = f"{deid_state}:{deid_reason}" if deid_reason else deid_state or "not-queued"
            typer.echo(
                f"{study.id}  case={reference or '(inbox)'}  instances={study.instance_count}"
                f"  bytes={study.total_bytes}  state={study.state}  deidentification={deid}"
            )


@app.command()
def export(
    study: Annotated[str, typer.Argument(help="Internal study id (see `dicom-vault list`).")],
    out: Annotated[Path, typer.Option(help="Directory to write the decrypted files to.")],
) -> None:
    """Decrypt a study's original files to a directory (administrators only)."""
    from vault.export import export_study

    vault = _vault()
    try:
        count = export_study(vault, study, out, actor=cli_actor())
    except VaultError as exc:
        raise _fail(exc) from exc
    typer.echo(f"{count} instances written to {out}")


def _log_worker_through_the_vault(level: str, *, celery_level: str) -> None:
    """Let the worker log through :func:`configure_logging`, not Celery's own handlers.

    Celery sets up no logging of its own once ``setup_logging`` has a receiver.
    """
    from celery.signals import setup_logging

    def set_up(**_: object) -> None:
        configure_logging(level)
        logging.getLogger("celery").setLevel(celery_level.upper())

    setup_logging.connect(set_up, weak=False)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes (default: celery.worker_concurrency).")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
    beat: Annotated[
        bool,
        typer.Option(
            help="Also run the daily schedule (expiry, access-log purge, backups and their"
            " rotation, the upload sweep)."
        ),
    ] = False,
) -> None:
    """Run a Celery worker for study-level tasks (de-identification) on the broker.

    Exactly one worker of a deployment should run with ``--beat``.
    """
    from deidentify.tasks import create_celery_app

    settings = cli_settings()
    if settings.celery.broker_url is None:
        typer.echo("error: no broker (celery.broker_url): tasks run in-process", err=True)
        raise typer.Exit(code=2)
    app_ = create_celery_app(settings)
    _log_worker_through_the_vault(settings.log_level, celery_level=loglevel)
    app_.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={concurrency or settings.celery.worker_concurrency}",
            f"--queues={settings.celery.queue}",
            # A node name of its own: on RabbitMQ a worker's remote-control queue
            # is exclusive to its name, so a second worker on the same host under
            # Celery's default (celery@host) dies at start with RESOURCE_LOCKED.
            f"--hostname={'beat' if beat else 'worker'}-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            *(["--beat"] if beat else []),
        ]
    )


@app.command()
def deidentify(
    inputs: Annotated[list[Path], typer.Argument(help="DICOM files or folders.")],
    out: Annotated[Path, typer.Option(help="Directory for the de-identified files.")],
    report: Annotated[
        bool, typer.Option(help="Also write deidentification-report.json (no values).")
    ] = False,
    organisation: Annotated[
        str | None,
        typer.Option(
            "--organisation",
            help="The organisation the files come from: its patient IDs without issuer get"
            " its pseudonyms (default: one 'unaffiliated' domain, no organisation's).",
        ),
    ] = None,
) -> None:
    """De-identify files offline with the deployment's profile and pseudonym key."""
    from deidentify.offline import run
    from deidentify.profile import Profile
    from deidentify.pseudonyms import DomainResolver
    from vault.admin import organisation_named
    from vault.issuers import registered_issuers

    vault = _vault()
    settings = vault.settings.deidentify
    try:
        with vault.catalog.read_session() as session:
            org_id = organisation_named(session, organisation).id if organisation else None
            domains = DomainResolver(org_id, registered_issuers(session))
    except VaultError as exc:
        raise _fail(exc) from exc
    summary = run(
        inputs,
        out,
        mac_key=vault.keyring.provider.mac_key(settings.pseudonym_key_purpose),
        report=report,
        profile=Profile.from_settings(settings),
        domains=domains,
    )
    counts = summary.quarantine_counts()
    vault.audit.record(
        AuditRecord(
            cli_actor(),
            "deidentify.offline",
            object_type="organisation" if org_id else None,
            object_id=org_id,
            detail={"written": len(summary.written), "quarantined": sum(counts.values())},
        )
    )
    held = ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "none"
    typer.echo(
        f"written {len(summary.written)}, quarantined {sum(counts.values())} ({held}),"
        f" skipped {len(summary.skipped)}"
    )


@app.command()
def reidentify(
    pseudonym: Annotated[str, typer.Argument(help="The pseudonym engineers see (PSN-...).")],
    request: Annotated[str, typer.Option(help="Reference of the request or incident.")],
) -> None:
    """Data-protection officer: list the original studies behind a pseudonym (audited)."""
    from deidentify.reidentify import reidentify as find_originals

    vault = _vault()
    try:
        found = find_originals(vault, pseudonym, actor=cli_actor(), request_ref=request)
    except VaultError as exc:
        raise _fail(exc) from exc
    for study in found:
        typer.echo(
            f"{study.study_id}  case={study.case_reference or '(inbox)'}"
            f"  received={study.received_at:%Y-%m-%d}"
        )
    if not found:
        typer.echo("no study has this pseudonym")
        raise typer.Exit(code=1)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Create a new KEK version; new data keys are wrapped under it."""
    vault = _vault()
    kek_id = vault.keyring.provider.rotate()
    vault.audit.record(AuditRecord(cli_actor(), "key.rotate", object_type="kek", object_id=kek_id))
    typer.echo(f"current key-encryption key: {kek_id}")


@keys_app.command("rewrap")
def keys_rewrap() -> None:
    """Re-wrap every data key under the current KEK (no object is re-encrypted)."""
    vault = _vault()
    report = vault.keyring.rewrap_all()
    vault.audit.record(
        AuditRecord(
            cli_actor(),
            "key.rewrap",
            object_type="kek",
            object_id=vault.keyring.provider.current_kek_id(),
            detail={"rewrapped": report.rewrapped, "current": report.already_current},
        )
    )
    typer.echo(
        f"re-wrapped {report.rewrapped}, already current {report.already_current},"
        f" destroyed {report.destroyed}"
    )


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the access log's hash chain and checkpoints; exit 1 if it was tampered with.

    Gaps between daily checkpoints are printed as warnings (exit 0): the vault
    was stopped, or its newest checkpoints were removed; a person explains them.
    """
    from vault.audit_retention import checkpoint_gaps, verify_audit

    vault = _vault()
    breaks = verify_audit(vault)
    for item in breaks:
        typer.echo(f"record {item.seq}: {item.problem}")
    if breaks:
        raise typer.Exit(code=1)
    for gap in checkpoint_gaps(vault):
        typer.echo(
            f"warning: record {gap.seq}: {gap.problem}"
            " (the vault was stopped, or checkpoints were removed)",
            err=True,
        )
    typer.echo("access log intact")


@audit_app.command("purge")
def audit_purge() -> None:
    """Delete access-log records older than retention.audit_retention_days (signed checkpoint)."""
    from vault.audit_retention import purge_audit

    purged = purge_audit(_vault(), actor=cli_actor())
    typer.echo(f"purged {purged} access-log records")


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Pin the access log's last record with a signed checkpoint."""
    from vault.audit_retention import write_checkpoint

    checkpoint = write_checkpoint(_vault(), actor=cli_actor())
    typer.echo(f"checkpoint at record {checkpoint.seq if checkpoint else 0}")


@audit_app.command("export")
def audit_export(
    fmt: Annotated[
        str, typer.Option("--format", help="atna (DICOM Audit Messages) or fhir (R4 NDJSON).")
    ],
    out: Annotated[Path, typer.Option(help="File to write, one record per line.")],
    since: Annotated[str | None, typer.Option(help="ISO date/time, inclusive (UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="ISO date/time, exclusive (UTC).")] = None,
) -> None:
    """Export the access log as IHE ATNA audit messages or FHIR AuditEvents."""
    from vault.audit_export import export_audit, parse_moment

    try:
        count = export_audit(
            _vault(),
            fmt,  # type: ignore[arg-type]
            out,
            actor=cli_actor(),
            since=parse_moment(since) if since else None,
            until=parse_moment(until) if until else None,
        )
    except VaultError as exc:
        raise _fail(exc) from exc
    typer.echo(f"exported {count} access-log records as {fmt}")


@audit_app.command("forward")
def audit_forward(
    from_seq: Annotated[
        int | None, typer.Option(help="Forward from after this record (default: new ones).")
    ] = None,
) -> None:
    """Forward the access log to the [audit.syslog] collector (RFC 5424 over TLS) until stopped."""
    from vault.audit_forward import AuditForwarder
    from vault.signals import StopSignal

    vault = _vault()
    if not vault.settings.audit.syslog.host:
        raise _fail(VaultError("audit.syslog.host is not set", reason="syslog-unset"))
    configure_logging(vault.settings.log_level)
    forwarder = AuditForwarder(vault, start_after=from_seq)
    stop = StopSignal()
    forwarder.start()
    stop.wait()
    stats = forwarder.stop()
    typer.echo(f"forwarded {stats.sent}, dropped {stats.dropped}")


@retention_app.command("run")
def retention_run() -> None:
    """Crypto-shred every study whose retention has ended and that no hold covers."""
    from vault.retention import expire_studies

    expired = expire_studies(_vault(), actor=cli_actor())
    typer.echo(f"expired {len(expired)} studies")


@hold_app.command("place")
def hold_place(
    reason: Annotated[str, typer.Option(help="Reason code, e.g. DISPUTE-2026-014.")],
    case: Annotated[str | None, typer.Option(help="Reference of the case to hold.")] = None,
    study: Annotated[str | None, typer.Option(help="Internal id of the study to hold.")] = None,
) -> None:
    """Place a legal hold on a case or a study: it will not expire until lifted."""
    from vault.holds import place_hold

    vault = _vault()
    try:
        case_id = _case_id(vault, case) if case is not None else None
        hold = place_hold(
            vault, reason_code=reason, placed_by=cli_actor(), case_id=case_id, study_id=study
        )
    except VaultError as exc:
        raise _fail(exc) from exc
    typer.echo(f"legal hold {hold.id} placed")


def _case_id(vault: Vault, reference: str) -> str:
    from vault.catalog.models import Case
    from vault.errors import NotFound

    with vault.catalog.read_session() as session:
        case_id = session.scalar(select(Case.id).where(Case.reference == reference))
    if case_id is None:
        raise NotFound("no such case")
    return case_id


@hold_app.command("lift")
def hold_lift(hold_id: Annotated[str, typer.Argument(help="The hold's id.")]) -> None:
    """Lift a legal hold; what it covered may expire again."""
    from vault.holds import lift_hold

    try:
        lift_hold(_vault(), hold_id, lifted_by=cli_actor())
    except VaultError as exc:
        raise _fail(exc) from exc
    typer.echo(f"legal hold {hold_id} lifted")


@hold_app.command("list")
def hold_list(
    include_lifted: Annotated[bool, typer.Option("--all", help="Also lifted holds.")] = False,
) -> None:
    """List legal holds: id, target, reason code, who placed it and when."""
    from vault.holds import list_holds

    for hold in list_holds(_vault(), include_lifted=include_lifted):
        target = f"case={hold.case_id}" if hold.case_id else f"study={hold.study_id}"
        lifted = f"  lifted={hold.lifted_at:%Y-%m-%d}" if hold.lifted_at else ""
        typer.echo(
            f"{hold.id}  {target}  reason={hold.reason_code}  by={hold.placed_by}"
            f"  placed={hold.placed_at:%Y-%m-%d}{lifted}"
        )


def main() -> None:
    """The ``dicom-vault`` command.

    A service it depends on that cannot be used at all (the catalog's database,
    the object store, the key provider: a wrong address, a stopped server, an
    HSM token the module does not see) ends any command with one line naming
    it and the setting to check, and exit status 2, as an invalid setting does:
    not a traceback of hundreds of lines. No value is printed.
    """
    try:
        app()
    except KeyProviderError as exc:
        said = str(exc)  # the provider's own advice, when it has some, is the more precise
        advice = "" if "check " in said else "; check [keys] (and SOFTHSM2_CONF for SoftHSM)"
        _cannot_use("the key provider", f"{said}{advice}")
    except StorageUnavailable as exc:
        _cannot_use("the object store", f"{exc}; check [store] and that it runs")
    except sqlalchemy.exc.OperationalError as exc:
        what = type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
        _cannot_use("the catalog", f"no connection ({what}); check catalog.url and that it runs")


def _cannot_use(service: str, why: str) -> NoReturn:
    typer.echo(f"error: cannot use {service}: {why}", err=True)
    raise SystemExit(2)
