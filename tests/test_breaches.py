"""The breach register: incidents, 24-hour and 72-hour deadlines, notifications, sealing,
the access log and the ``dicom-vault breach`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from vault.breach_views import get_breach, list_breaches, texts_of
from vault.breaches import (
    add_entry,
    close_breach,
    record_breach,
    record_notification,
    update_assessment,
)
from vault.core import Vault
from vault.errors import InvalidInput, RequestNotOpen

DPO = "user:dpo-test"
CLI = Path(sys.executable).with_name("dicom-vault")
SECRET_TEXT = "laptop of Dr Quuxleigh stolen from car"


def new_breach(vault: Vault, *, hours_ago: float = 0, **kwargs) -> str:
    detected = vault.clock.now() - timedelta(hours=hours_ago)
    breach = record_breach(
        vault,
        detected_at=detected,
        nature=kwargs.pop("nature", ["confidentiality"]),
        description=kwargs.pop("description", SECRET_TEXT),
        actor=DPO,
        **kwargs,
    )
    return breach.id


ASSESSED = {
    "cause": "car left unlocked",
    "consequences": "images of 3 patients exposed",
    "measures": "remote wipe",
    "lessons": "full-disk encryption on laptops",
}


def assess_fully(vault: Vault, breach_id: str) -> None:
    update_assessment(vault, breach_id, actor=DPO, texts=ASSESSED)


def exempt(vault: Vault, breach_id: str, party: str, exemption: str) -> None:
    reason = "encrypted disk, key not on the laptop"
    record_notification(
        vault, breach_id, actor=DPO, party=party, exemption=exemption, reason=reason
    )


def advance(vault: Vault, **delta: float) -> None:
    vault.clock.advance(timedelta(**delta))  # type: ignore[attr-defined]


class TestDeadlines:
    def test_authority_must_be_notified_within_72_hours_of_detection(
        self, embedded_vault: Vault
    ) -> None:
        breach_id = new_breach(embedded_vault)
        view = get_breach(embedded_vault, breach_id)
        assert view.notification_due == view.breach.detected_at + timedelta(hours=72)
        advance(embedded_vault, hours=71)
        assert not get_breach(embedded_vault, breach_id).notification_overdue
        advance(embedded_vault, hours=2)
        assert get_breach(embedded_vault, breach_id).notification_overdue

    def test_investigation_is_overdue_after_24_hours_until_one_is_recorded(
        self, embedded_vault: Vault
    ) -> None:
        breach_id = new_breach(embedded_vault, hours_ago=25)
        assert get_breach(embedded_vault, breach_id).investigation_overdue
        add_entry(embedded_vault, breach_id, actor=DPO, kind="investigation", text="logs pulled")
        view = get_breach(embedded_vault, breach_id)
        assert not view.investigation_overdue
        assert view.investigation_late
        assert view.breach.investigation_started_at == embedded_vault.clock.now()

    def test_a_notification_after_72_hours_is_flagged_late(self, embedded_vault: Vault) -> None:
        breach_id = new_breach(embedded_vault, hours_ago=80)
        record_notification(
            embedded_vault,
            breach_id,
            actor=DPO,
            party="authority",
            at=embedded_vault.clock.now(),
            authority_reference="CNIL-2026-0042",
        )
        view = get_breach(embedded_vault, breach_id)
        assert (view.notification_overdue, view.notified_late) == (False, True)
        assert view.breach.authority_reference == "CNIL-2026-0042"

    def test_an_exemption_stands_in_for_a_notification(self, embedded_vault: Vault) -> None:
        breach_id = new_breach(embedded_vault, hours_ago=100, nature=["availability"])
        exempt(embedded_vault, breach_id, "authority", "unlikely-risk")
        view = get_breach(embedded_vault, breach_id)
        assert (view.notification_overdue, view.notified_late) == (False, False)
        assert view.breach.authority_exemption == "unlikely-risk"

    def test_overdue_incidents_are_flagged_in_the_list_and_closed_ones_leave_it(
        self, embedded_vault: Vault
    ) -> None:
        old = new_breach(embedded_vault, hours_ago=90, reference="BR-OLD")
        new = new_breach(embedded_vault, reference="BR-NEW")
        flags = {v.breach.id: v.notification_overdue for v in list_breaches(embedded_vault)}
        assert flags == {old: True, new: False}
        exempt(embedded_vault, new, "authority", "unlikely-risk")
        exempt(embedded_vault, new, "subjects", "no-high-risk")
        assess_fully(embedded_vault, new)
        close_breach(embedded_vault, new, actor=DPO)
        assert [v.breach.id for v in list_breaches(embedded_vault)] == [old]
        assert len(list_breaches(embedded_vault, include_closed=True)) == 2


class TestRecord:
    def test_descriptions_and_chronology_are_sealed_not_stored_in_clear(
        self, embedded_vault: Vault
    ) -> None:
        breach_id = new_breach(embedded_vault, categories=["health-imaging"], subjects=3)
        add_entry(embedded_vault, breach_id, actor=DPO, kind="containment", text="Quuxleigh called")
        update_assessment(
            embedded_vault, breach_id, actor=DPO, texts={"lessons": "encrypt Quuxleigh's disks"}
        )
        with embedded_vault.catalog.engine.connect() as connection:
            dumped = "\n".join(connection.connection.driver_connection.iterdump())
        assert 'INSERT INTO "breach_entries"' in dumped
        assert "Quuxleigh" not in dumped
        view = get_breach(embedded_vault, breach_id)
        texts, entries = texts_of(embedded_vault, view.breach)
        assert texts == {"description": SECRET_TEXT, "lessons": "encrypt Quuxleigh's disks"}
        assert [(e.kind, e.text) for e in entries] == [("containment", "Quuxleigh called")]
        assert (view.breach.data_categories, view.breach.subjects_affected) == ("health-imaging", 3)

    def test_every_change_is_in_the_access_log_without_the_texts(
        self, embedded_vault: Vault
    ) -> None:
        breach_id = new_breach(embedded_vault)
        add_entry(embedded_vault, breach_id, actor=DPO, kind="investigation", text="begun")
        update_assessment(embedded_vault, breach_id, actor=DPO, subjects=40, records=900)
        record_notification(
            embedded_vault, breach_id, actor=DPO, party="subjects", at=embedded_vault.clock.now()
        )
        events = [e for e in embedded_vault.audit.events() if e.action.startswith("breach.")]
        assert [e.action for e in events] == [
            "breach.record",
            "breach.entry",
            "breach.update",
            "breach.entry",
            "breach.notify",
        ]
        assert {(e.actor, e.object_type, e.object_id) for e in events} == {
            (DPO, "breach", breach_id)
        }
        assert all("Quuxleigh" not in e.detail and "begun" not in e.detail for e in events)
        assert json.loads(events[-1].detail)["party"] == "subjects"

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"nature": []},
            {"nature": ["gossip"]},
            {"categories": ["horoscopes"]},
            {"subjects": -1},
            {"description": "  "},
        ],
    )
    def test_incomplete_or_wrong_records_are_refused(
        self, embedded_vault: Vault, kwargs: dict[str, object]
    ) -> None:
        with pytest.raises(InvalidInput):
            new_breach(embedded_vault, **kwargs)
        assert list_breaches(embedded_vault, include_closed=True) == []

    def test_detection_in_the_future_is_refused(self, embedded_vault: Vault) -> None:
        with pytest.raises(InvalidInput):
            new_breach(embedded_vault, hours_ago=-1)

    def test_closing_needs_both_notification_decisions_and_freezes_the_record(
        self, embedded_vault: Vault
    ) -> None:
        breach_id = new_breach(embedded_vault)
        record_notification(
            embedded_vault, breach_id, actor=DPO, party="authority", at=embedded_vault.clock.now()
        )
        assess_fully(embedded_vault, breach_id)
        with pytest.raises(InvalidInput, match="data subjects"):
            close_breach(embedded_vault, breach_id, actor=DPO)
        exempt(embedded_vault, breach_id, "subjects", "data-unintelligible")
        close_breach(embedded_vault, breach_id, actor=DPO)
        with pytest.raises(RequestNotOpen):
            add_entry(embedded_vault, breach_id, actor=DPO, kind="note", text="too late")

    def test_a_notification_needs_a_time_or_a_known_exemption(self, embedded_vault: Vault) -> None:
        breach_id = new_breach(embedded_vault)
        for kwargs in (
            {"party": "authority"},
            {"party": "authority", "exemption": "no-high-risk"},
            {"party": "press", "at": embedded_vault.clock.now()},
        ):
            with pytest.raises(InvalidInput):
                record_notification(embedded_vault, breach_id, actor=DPO, **kwargs)


class TestWhatClosingRequires:
    @pytest.mark.parametrize("left_out", ["cause", "consequences", "measures", "lessons"])
    def test_an_incident_is_not_closed_without_its_cause_consequences_measures_and_lessons(
        self, embedded_vault: Vault, left_out: str
    ) -> None:
        breach_id = new_breach(embedded_vault)
        exempt(embedded_vault, breach_id, "authority", "unlikely-risk")
        exempt(embedded_vault, breach_id, "subjects", "no-high-risk")
        texts = {field: text for field, text in ASSESSED.items() if field != left_out}
        update_assessment(embedded_vault, breach_id, actor=DPO, texts=texts)
        with pytest.raises(InvalidInput, match=f"before closing, record {left_out}$"):
            close_breach(embedded_vault, breach_id, actor=DPO)
        assert get_breach(embedded_vault, breach_id).breach.state == "open"

    def test_the_cause_is_sealed_and_shown_to_the_dpo(self, embedded_vault: Vault) -> None:
        breach_id = new_breach(embedded_vault)
        update_assessment(embedded_vault, breach_id, actor=DPO, texts={"cause": "Quuxleigh's car"})
        with embedded_vault.catalog.engine.connect() as connection:
            dumped = "\n".join(connection.connection.driver_connection.iterdump())
        assert "Quuxleigh" not in dumped
        texts, _ = texts_of(embedded_vault, get_breach(embedded_vault, breach_id).breach)
        assert texts["cause"] == "Quuxleigh's car"

    def test_an_exemption_from_notifying_needs_its_reason(self, embedded_vault: Vault) -> None:
        breach_id = new_breach(embedded_vault)
        for party, exemption in (("authority", "unlikely-risk"), ("subjects", "no-high-risk")):
            with pytest.raises(InvalidInput, match="reason for the exemption"):
                record_notification(
                    embedded_vault, breach_id, actor=DPO, party=party, exemption=exemption
                )
            exempt(embedded_vault, breach_id, party, exemption)
        texts, _ = texts_of(embedded_vault, get_breach(embedded_vault, breach_id).breach)
        assert texts["authority_exemption_reason"] == "encrypted disk, key not on the laptop"
        assert texts["subjects_exemption_reason"] == "encrypted disk, key not on the laptop"


class TestLatenessByRecordingTime:
    def test_a_backdated_investigation_entry_is_still_flagged_late(
        self, embedded_vault: Vault
    ) -> None:
        breach_id = new_breach(embedded_vault)
        detected = embedded_vault.clock.now()
        advance(embedded_vault, hours=50)
        stated = detected + timedelta(hours=1)
        add_entry(embedded_vault, breach_id, actor=DPO, kind="investigation", text="x", at=stated)
        view = get_breach(embedded_vault, breach_id)
        assert (view.investigation_overdue, view.investigation_late) == (False, True)
        assert view.breach.investigation_started_at == stated  # the DPO's date is still shown
        assert view.breach.investigation_recorded_at == embedded_vault.clock.now()

    def test_a_backdated_authority_notification_is_still_flagged_late(
        self, embedded_vault: Vault
    ) -> None:
        breach_id = new_breach(embedded_vault)
        stated = embedded_vault.clock.now() + timedelta(hours=2)
        advance(embedded_vault, hours=80)
        record_notification(embedded_vault, breach_id, actor=DPO, party="authority", at=stated)
        view = get_breach(embedded_vault, breach_id)
        assert view.notified_late
        assert view.breach.authority_notified_at == stated

    def test_an_entry_recorded_within_24_hours_is_on_time(self, embedded_vault: Vault) -> None:
        breach_id = new_breach(embedded_vault)
        advance(embedded_vault, hours=23)
        add_entry(embedded_vault, breach_id, actor=DPO, kind="investigation", text="begun")
        assert not get_breach(embedded_vault, breach_id).investigation_late


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DICOM_VAULT_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [str(CLI), "breach", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_breach_commands_record_list_and_close_an_incident(tmp_path: Path) -> None:
    data = tmp_path / "var"
    recorded = run_cli(
        data,
        "record",
        "--nature",
        "integrity",
        "--description",
        "a corrupted backup",
        "--detected",
        "2020-01-01T08:00",
        "--reference",
        "BR-CLI-1",
        "--category",
        "access-log",
    )
    assert recorded.returncode == 0, recorded.stderr
    assert "incident BR-CLI-1" in recorded.stdout
    listed = run_cli(data, "list")
    assert "BR-CLI-1" in listed.stdout and "INVESTIGATION-OVERDUE" in listed.stdout
    assert "NOTIFICATION-OVERDUE" in listed.stdout
    refused = run_cli(data, "notify", "BR-CLI-1", "--party", "authority", "--exemption", "nope")
    assert refused.returncode == 2 and "exemption" in refused.stderr
    for party, exemption in (("authority", "unlikely-risk"), ("subjects", "no-high-risk")):
        notify = ("notify", "BR-CLI-1", "--party", party, "--exemption", exemption)
        done = run_cli(data, *notify, "--reason", "only checksums were affected")
        assert done.returncode == 0, done.stderr
    incomplete = run_cli(data, "close", "BR-CLI-1")
    assert incomplete.returncode == 2
    assert "before closing, record cause, consequences, measures, lessons" in incomplete.stderr
    assessed = [f"--{field}={text}" for field, text in ASSESSED.items()]
    assert run_cli(data, "assess", "BR-CLI-1", *assessed).returncode == 0
    assert run_cli(data, "close", "BR-CLI-1").returncode == 0
    shown = run_cli(data, "show", "BR-CLI-1")
    assert "closed" in shown.stdout and "a corrupted backup" in shown.stdout
    assert "authority not notified: unlikely-risk" in shown.stdout
