"""The clinicians' upload page in a real browser, against a real server process.

The service runs as ``dicom-vault serve`` in a subprocess (so it can be
killed and restarted) on an embedded vault seeded with a case and a
clinician; Debian's Chromium drives the page through Playwright. A
clinician logs in, sends a folder of 300 CT slices, a ZIP archive and a
CD's DICOMDIR tree, sees progress, loses the server mid-upload, reloads the
page after the restart, finishes without re-sending finished files and sees
the series summary with thumbnails. A large file resumes at its offset
after network drops and a reload. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dicom_ingest.synthetic import encode, make_ct_series
from tests.browser_upload_support import (
    CHUNK,
    PASSWORD,
    Scan,
    Server,
    World,
    free_port,
    make_scan,
    pseudonymised_states,
    seed,
    stored_counts,
)
from tests.services.browser import log_in, shot

pytestmark = pytest.mark.browser

PANEL = "document.getElementById('progress-panel').dataset"
# Records the states of the "connection lost" note (shown: true) before each change.
NOTE_WATCH = """() => {
    const note = document.getElementById("network-note");
    window.noteShown = [!note.hidden];
    new MutationObserver((records) => {
        for (const record of records) window.noteShown.push(record.oldValue === null);
    }).observe(note, {attributes: true, attributeFilter: ["hidden"], attributeOldValue: true});
}"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    server = Server(tmp_path / "data", free_port(), tmp_path / "server.log")
    seeded = seed(server)
    server.start()
    try:
        yield seeded
    finally:
        server.stop()


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Scan:
    return make_scan(tmp_path_factory.mktemp("scan"))


# ---- page helpers -------------------------------------------------------------


def _shot(page: object, name: str) -> None:
    shot(page, f"upload-{name}")


def _open_upload_page(browser: object, world: World) -> object:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" on reload

    def seen(request: object) -> None:
        if "/api/uploads" in request.url:  # type: ignore[attr-defined]
            item = (world.phase, request.method, request.url, request.headers)  # type: ignore[attr-defined]
            world.requests.append(item)

    page.on("request", seen)
    page.on(
        "response",
        lambda r: (
            world.responses.append((world.phase, r.request.method, r.url, r.status))
            if "/api/uploads" in r.url
            else None
        ),
    )
    url = world.server.url
    page.goto(f"{url}/login")
    log_in(page, url, world.email, PASSWORD, world.totp_secret)
    page.click("#upload-link")
    page.wait_for_url(f"{url}/upload")
    page.click(f"#case-list a:text('{world.case_ref}')")
    page.wait_for_url(f"{url}/cases/{world.case_id}/upload")
    _wait_ready(page)
    return page


def _wait_ready(page: object) -> None:
    page.wait_for_selector("#uploader[data-ready=true]", state="attached")  # type: ignore[attr-defined]


def _drop(page: object, path: Path) -> None:
    """Drop ``path`` on the drop zone, as a file dragged from the desktop."""
    data = base64.b64encode(path.read_bytes()).decode()
    page.evaluate(  # type: ignore[attr-defined]
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "application/zip", lastModified: 1}));
            const zone = document.getElementById("drop-zone");
            const init = {dataTransfer: transfer, bubbles: true, cancelable: true};
            zone.dispatchEvent(new DragEvent("drop", init));
        }""",
        [path.name, data],
    )


def _send_everything(page: object, scan: Scan) -> None:
    page.set_input_files("#pick-folder", str(scan.folder))  # type: ignore[attr-defined]
    _drop(page, scan.archive)
    page.set_input_files("#pick-folder", str(scan.cd))  # type: ignore[attr-defined]


def _panel(page: object, key: str) -> int:
    return int(page.evaluate(f"{PANEL}.{key} || 0"))  # type: ignore[attr-defined]


def _remembered(page: object, case_id: str) -> dict[str, str]:
    saved = page.evaluate(f"localStorage.getItem('dicom-vault.upload.{case_id}')")  # type: ignore[attr-defined]
    return json.loads(saved)["files"] if saved else {}


_KIND_DICOM = "kind " + base64.b64encode(b"dicom").decode()
_KIND_ZIP = "kind " + base64.b64encode(b"zip").decode()


def _path_of(url: str) -> str:
    return httpx.URL(url).path


def _after_reload(world: World, method: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (_path_of(url), headers)
        for phase, m, url, headers in world.requests
        if phase == "after" and m == method and "/files" in url
    ]


class TestUploadPage:
    def test_a_study_survives_a_server_restart_and_arrives_complete_with_its_summary(
        self, world: World, browser: object, scan: Scan
    ) -> None:
        page = _open_upload_page(browser, world)
        _shot(page, "1-page")
        _send_everything(page, scan)
        page.wait_for_function(
            f"() => Number({PANEL}.filesTotal) === {Scan.sendable}"
            f" && Number({PANEL}.filesDone) >= 40"
        )
        early = page.eval_on_selector("#overall-bar", "bar => bar.value")
        assert " of " in page.inner_text("#overall-text")
        page.wait_for_function(f"() => Number({PANEL}.filesDone) >= 80")
        later = page.eval_on_selector("#overall-bar", "bar => bar.value")
        assert 0 < early < later < 1  # progress moves
        _shot(page, "2-progress")

        world.server.kill()
        page.wait_for_selector("#network-note", state="visible")
        _shot(page, "3-connection-lost")
        assert _panel(page, "filesDone") < Scan.sendable
        remembered = _remembered(page, world.case_id)
        assert len(remembered) >= 80
        stored = page.evaluate(f"localStorage.getItem('dicom-vault.upload.{world.case_id}')")
        assert "knee" not in stored and ".dcm" not in stored  # fingerprints, not names

        # The page keeps retrying on its own; hold its requests back while the
        # server restarts, so that what follows is only what a reloaded page sends.
        page.route("**/api/uploads**", lambda route: route.abort("connectionrefused"))
        world.server.start()
        page.reload()
        world.phase = "after"
        page.unroute("**/api/uploads**")
        _wait_ready(page)
        page.wait_for_selector("#resume-note", state="visible")
        _send_everything(page, scan)
        page.wait_for_function(
            f"() => Number({PANEL}.filesTotal) === {Scan.sendable}"
            f" && {PANEL}.filesDone === {PANEL}.filesTotal",
            timeout=60_000,
        )

        # Nothing the server already had was sent again: every remembered file
        # was only asked about (HEAD), and only the others were created anew.
        assert not [r for r in world.requests if r[0] == "after" and r[2].endswith("/api/uploads")]
        heads = {path for path, _ in _after_reload(world, "HEAD")}
        created = _after_reload(world, "POST")
        assert set(remembered.values()) <= heads
        statuses = sorted({(m, st) for ph, m, _, st in world.responses if ph == "after"})
        assert len(created) == Scan.sendable - len(remembered), statuses
        for path, headers in _after_reload(world, "PATCH"):
            if path in remembered.values():  # a file cut mid-way resumes where it stopped
                assert int(headers["upload-offset"]) > 0

        page.wait_for_function(
            "() => document.querySelectorAll('#series-list img.thumbnail').length === 3 && "
            "[...document.querySelectorAll('#series-list img.thumbnail')]"
            ".every((img) => img.complete && img.naturalWidth > 0)"
        )
        cards = page.locator("#series-list article.series")
        texts = [cards.nth(i).inner_text() for i in range(3)]
        assert "AXIAL 1MM" in texts[0] and "300" in texts[0]
        assert "MR" in texts[1] and "12" in texts[1]
        assert "8" in texts[2] and "2 mm thick" in texts[2]  # the CD's thick slices are flagged
        refused = page.inner_text("#refused-list")
        assert "notes.txt" in refused and "DICOM" in refused
        assert page.locator("#file-rows tr[data-state=skipped]").count() == 2  # DICOMDIR, .DS_Store
        _shot(page, "4-summary")

        page.click("#complete")
        page.wait_for_selector("#uploader[data-upload-state=complete]", state="attached")
        assert "Upload complete" in page.inner_text("#complete-status")
        assert _remembered(page, world.case_id) == {}
        _shot(page, "5-complete")

        # File names never left the browser: the only metadata sent is the kind.
        for _, method, url, headers in world.requests:
            assert "knee" not in url and "notes" not in url
            if method == "POST" and url.endswith("/files"):
                assert headers["upload-metadata"] in {_KIND_DICOM, _KIND_ZIP}
        instances, duplicates = stored_counts(world)
        assert instances == 300 + 12 + 8
        assert duplicates <= 4  # at most the files in flight when the server died
        # Completion handed every study to de-identification (in-process: no broker).
        states = pseudonymised_states(world)
        assert states and set(states) == {"done"}

    def test_a_large_file_resumes_at_its_offset_after_network_drops_and_a_reload(
        self, world: World, browser: object, tmp_path: Path
    ) -> None:
        big = tmp_path / "big" / "CT-LARGE.dcm"
        big.parent.mkdir()
        big.write_bytes(encode(next(make_ct_series(1, rows=768, columns=768, seed=7))))
        page = _open_upload_page(browser, world)
        patches: list[int] = []

        def network(route: object) -> None:
            request = route.request  # type: ignore[attr-defined]
            if request.method != "PATCH":
                route.continue_()  # type: ignore[attr-defined]
                return
            patches.append(int(request.headers["upload-offset"]))
            # a short drop (PATCHes 3 and 4 lost), then a drop that lasts from PATCH 8 on
            if len(patches) in (3, 4) or len(patches) >= 8:
                route.abort("connectionreset")  # type: ignore[attr-defined]
            else:
                route.continue_()  # type: ignore[attr-defined]

        page.route("**/api/uploads/*/files/*", network)
        page.evaluate(NOTE_WATCH)
        with page.expect_request(lambda r: r.method == "HEAD" and len(patches) >= 8):
            page.set_input_files("#pick-files", str(big))
        assert page.is_visible("#network-note")
        _shot(page, "6-large-file-dropped")
        shown = page.evaluate(
            "[...window.noteShown, !document.getElementById('network-note').hidden]"
        )
        changes = [v for i, v in enumerate(shown) if i == 0 or shown[i - 1] != v]
        assert changes == [False, True, False, True]  # shown, gone when back, shown again
        # the lost PATCHes were sent again from the same offset, nothing skipped
        assert patches[:5] == [0, CHUNK, 2 * CHUNK, 2 * CHUNK, 2 * CHUNK]
        received = 7 * CHUNK - 2 * CHUNK  # PATCHes 1, 2, 5, 6, 7 got through

        page.unroute("**/api/uploads/*/files/*")
        world.phase = "after"
        page.reload()
        _wait_ready(page)
        page.wait_for_selector("#resume-note", state="visible")
        page.set_input_files("#pick-files", str(big))
        page.wait_for_selector("#file-rows tr[data-state=stored]", timeout=30_000)

        assert _after_reload(world, "POST") == []
        offsets = [int(headers["upload-offset"]) for _, headers in _after_reload(world, "PATCH")]
        assert offsets[0] == received
        expected = list(range(received, big.stat().st_size, CHUNK))
        assert offsets == expected
        assert stored_counts(world) == (1, 0)
