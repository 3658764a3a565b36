"""Refused requests of identified callers are in the access log, once, and others are not.

The app runs on an embedded vault (``auth_world``); callers hold real session
cookies. A refusal a route records itself (an engineer's download out of
reach) is not recorded twice; a form's bad input is not an access and is not
recorded as a refusal; no one identified, no record.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from tests.services.auth_env import AuthWorld, post_form
from vault.api.refusals import ACTION
from vault.audit_export import export_audit
from vault.catalog.models import AuditEvent
from vault.dsr import open_request

BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"


def refusals(world: AuthWorld) -> list[AuditEvent]:
    with world.vault.catalog.read_session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == ACTION)))


def actions_since(world: AuthWorld, seq: int) -> list[tuple[str, str]]:
    with world.vault.catalog.read_session() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.seq > seq))
        return [(row.action, row.outcome) for row in rows]


def last_seq(world: AuthWorld) -> int:
    with world.vault.catalog.read_session() as session:
        return max(session.scalars(select(AuditEvent.seq)), default=0)


class TestRecorded:
    def test_a_surgeon_opening_the_dpo_pages_is_recorded_with_the_route(
        self, auth_world: AuthWorld
    ) -> None:
        surgeon = auth_world.add_user("surgeon@hospital.example", "clinician")
        client = auth_world.logged_in(surgeon)
        assert client.get("/dpo", headers={"accept": BROWSER}).status_code == 403
        [record] = refusals(auth_world)
        assert (record.actor, record.outcome) == (f"user:{surgeon.user_id}", "forbidden")
        assert record.remote is not None
        assert json.loads(record.detail) == {"route": "/dpo", "method": "GET", "status": 403}

    def test_a_package_asked_for_before_the_identity_check_is_recorded_with_the_request(
        self, auth_world: AuthWorld
    ) -> None:
        dpo = auth_world.add_user("dpo@maker.example", "dpo", "Maker")
        client = auth_world.logged_in(dpo)
        vault = auth_world.vault
        request = open_request(
            vault, kind="access", received_at=vault.clock.now() - timedelta(days=1), actor="t"
        )
        refused = post_form(client, f"/dpo/requests/{request.id}/package", {})
        assert refused.status_code == 409
        [record] = refusals(auth_world)
        assert record.actor == f"user:{dpo.user_id}"
        detail = json.loads(record.detail)
        assert detail["request_id"] == request.id and detail["status"] == 409
        assert detail["route"] == "/dpo/requests/{request_id}/package"

    def test_the_export_tells_it_as_a_security_alert_of_minor_failure(
        self, auth_world: AuthWorld, tmp_path: Path
    ) -> None:
        client = auth_world.logged_in(auth_world.add_user("s@hospital.example", "clinician"))
        assert client.get("/admin").status_code == 403
        out = tmp_path / "log.xml"
        export_audit(auth_world.vault, "atna", out, actor="cli:auditor")
        xml = out.read_text()
        assert 'csd-code="110113"' in xml  # Security Alert
        assert 'csd-code="110132"' in xml  # Use of Restricted Function
        assert 'EventOutcomeIndicator="4"' in xml


class TestNotRecorded:
    def test_no_one_identified_leaves_no_refusal(self, auth_world: AuthWorld) -> None:
        client = auth_world.new_client()
        client.get("/dpo", headers={"accept": BROWSER}, follow_redirects=False)
        client.get("/api/engineer/studies", headers={"authorization": "Bearer nonsense"})
        assert refusals(auth_world) == []

    def test_a_refusal_the_route_records_itself_is_not_recorded_twice(
        self, auth_world: AuthWorld
    ) -> None:
        engineer = auth_world.add_user("eng@maker.example", "engineer", "Maker")
        client = auth_world.logged_in(engineer)
        before = last_seq(auth_world)
        assert client.get(f"/api/engineer/studies/{'0' * 32}").status_code == 404
        assert actions_since(auth_world, before) == [("study.metadata", "not-found")]

    def test_a_forms_bad_input_is_not_a_refused_access(self, auth_world: AuthWorld) -> None:
        dpo = auth_world.add_user("dpo@maker.example", "dpo", "Maker")
        client = auth_world.logged_in(dpo)
        future = (auth_world.vault.clock.now() + timedelta(days=3)).date().isoformat()
        refused = post_form(client, "/dpo/requests", {"kind": "access", "received": future})
        assert refused.status_code == 422
        assert refusals(auth_world) == []
