"""The clinicians' upload page in a real browser, against a real server process.

The service runs as ``dicom-vault serve`` in a subprocess (so it can be
killed and restarted) on an embedded vault seeded with a case and a
clinician; Debian's Chromium drives the page through Playwright. A
clinician logs in, sends a folder of 300 CT slices, a ZIP archive and a
CD's DICOMDIR tree, sees progress, loses the server mid-upload, reloads the
page after the restart, finishes without re-sending finished files and sees
the series summary with thumbnails. A large file resumes at its offset
after network drops and a reload, and after a request that stalls without
a word; a file that can no longer be read is reported, not retried for
ever; a dropped folder with an unreadable entry still gives the rest.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyotp
import pytest

from dicom_ingest._synthetic_phi import SyntheticPatient
from dicom_ingest.synthetic import encode, make_ct_series, write_series
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


# The page's stall limit in the tests that need one (default 30 s): ordinary
# chunks, which pass through Playwright routes, must stay under it on a loaded machine.
STALL_SECONDS = 5.0


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    stall = STALL_SECONDS if request.node.get_closest_marker("stall_limit") else None
    server = Server(tmp_path / "data", free_port(), tmp_path / "server.log", stall_seconds=stall)
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
        # The surgeon can tell it is their patient's scan: initials, birth date, study date.
        assert all("M. Q., born 1961-03-14, F" in text for text in texts)
        assert page.inner_text("#summary-patient") == (
            "Patient M. Q., born 1961-03-14, F, study of 2023-05-17."
            " Check that this is the patient of this order."
        )
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


def _large_slice(tmp_path: Path) -> Path:
    big = tmp_path / "big" / "CT-LARGE.dcm"
    big.parent.mkdir()
    big.write_bytes(encode(next(make_ct_series(1, rows=768, columns=768, seed=7))))
    return big


def _wait_for(page: object, done: Callable[[], bool], seconds: float = 30.0) -> None:
    """Let the page run (and its routes answer) until ``done()``."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the page never got there"
        page.wait_for_timeout(50)  # type: ignore[attr-defined]


def _lose_a_file(page: object, disc: Path) -> tuple[Path, Path, bytes]:
    """Pick a folder of two slices while offline, take the second off the disk,
    come back online; once the first arrived and the second was given up:
    (kept, gone, the gone file's bytes)."""
    write_series(disc, make_ct_series(2, seed=11))
    kept, gone = sorted(disc.iterdir())
    lost = gone.read_bytes()
    attempts: list[str] = []

    def offline(route: object) -> None:
        attempts.append(route.request.method)  # type: ignore[attr-defined]
        route.abort("internetdisconnected")  # type: ignore[attr-defined]

    page.route("**/api/uploads/*/files**", offline)  # type: ignore[attr-defined]
    page.set_input_files("#pick-folder", str(disc))  # type: ignore[attr-defined]
    _wait_for(page, lambda: len(attempts) >= 2)  # both files tried while offline
    gone.unlink()  # the disc is taken out
    page.unroute("**/api/uploads/*/files**")  # type: ignore[attr-defined]
    page.wait_for_selector("#file-rows tr[data-state=stored]", timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_selector("#file-rows tr[data-state=failed]", timeout=30_000)  # type: ignore[attr-defined]
    return kept, gone, lost


# Builds fake directory entries (fault injection: a file and a folder that
# cannot be read) and walks them with the page's own drop code.
WALK_FAULTY_DROP = """async () => {
    const { fromDrop } = await import("/static/upload-files.js");
    const file = (name) => new File(["x"], name);
    const gone = () => new DOMException("gone", "NotFoundError");
    const fileEntry = (path, ok = true) => ({
        isFile: true, isDirectory: false, fullPath: path,
        file: (resolve, reject) => (ok ? resolve(file(path.split("/").pop())) : reject(gone())),
    });
    const dirEntry = (path, children, ok = true) => ({
        isFile: false, isDirectory: true, fullPath: path,
        createReader: () => {
            let given = false;
            return { readEntries: (resolve, reject) => {
                if (!ok) return reject(gone());
                resolve(given ? [] : children);
                given = true;
            } };
        },
    });
    const item = (entry, plain) => ({
        kind: "file", webkitGetAsEntry: () => entry, getAsFile: () => plain,
    });
    const cd = dirEntry("/CD", [
        fileEntry("/CD/IM1"), fileEntry("/CD/IM2", false), dirEntry("/CD/SUB", [], false),
    ]);
    const transfer = { items: [item(cd, null), item(null, file("loose.zip"))], files: [] };
    const found = await fromDrop(transfer);
    return found.map((f) => [f.path, f.file ? f.file.name : null, Boolean(f.unreadable)]);
}"""


class TestUploadPageWhenThingsGoWrong:
    @pytest.mark.stall_limit
    def test_a_request_that_stalls_without_a_word_is_given_up_and_the_file_resumes(
        self, world: World, browser: object, tmp_path: Path
    ) -> None:
        big = _large_slice(tmp_path)
        page = _open_upload_page(browser, world)
        patches: list[int] = []
        failed: list[str] = []

        def network(route: object) -> None:
            request = route.request  # type: ignore[attr-defined]
            if request.method == "PATCH":
                patches.append(int(request.headers["upload-offset"]))
                if len(patches) == 2:
                    return  # never answered: the connection died silently
            route.continue_()  # type: ignore[attr-defined]

        page.on("requestfailed", lambda request: failed.append(request.method))  # type: ignore[attr-defined]
        page.route("**/api/uploads/*/files/*", network)  # type: ignore[attr-defined]
        page.evaluate(NOTE_WATCH)  # type: ignore[attr-defined]
        page.set_input_files("#pick-files", str(big))  # type: ignore[attr-defined]
        page.wait_for_selector("#file-rows tr[data-state=stored]", timeout=60_000)  # type: ignore[attr-defined]

        assert failed == ["PATCH"]  # the stalled request, abandoned by the page
        # resumed at the server's offset: the stalled chunk once more, then the rest
        size = big.stat().st_size
        assert patches == [0, CHUNK, *range(CHUNK, size, CHUNK)]
        shown = page.evaluate("window.noteShown")  # type: ignore[attr-defined]
        assert True in shown  # "connection lost" was said while it waited
        assert page.is_hidden("#network-note")  # type: ignore[attr-defined]
        assert stored_counts(world) == (1, 0)

    def test_a_file_that_can_no_longer_be_read_is_reported_and_the_others_arrive(
        self, world: World, browser: object, tmp_path: Path
    ) -> None:
        page = _open_upload_page(browser, world)
        kept, gone, _ = _lose_a_file(page, tmp_path / "disc")
        row = page.wait_for_selector("#file-rows tr[data-state=failed]")  # type: ignore[attr-defined]
        _shot(page, "7-unreadable-file")

        assert gone.name in row.inner_text()
        assert "can no longer be read" in row.inner_text()
        not_sent = page.inner_text("#not-sent-list")  # type: ignore[attr-defined]
        assert gone.name in not_sent and "can no longer be read" in not_sent
        assert page.is_hidden("#refused-panel")  # type: ignore[attr-defined]
        assert page.is_hidden("#network-note")  # type: ignore[attr-defined]
        assert stored_counts(world) == (1, 0)
        assert kept.exists()
        # the summary does not say all is well: one file of the scan never arrived
        warning = page.wait_for_selector("#warnings li[data-code=not-sent]")  # type: ignore[attr-defined]
        assert "1 file was not sent" in warning.inner_text()
        assert "1 file not sent" in page.inner_text("#summary-verdict")  # type: ignore[attr-defined]
        # completing asks first (the page's own handler accepts; this one listens)
        asked: list[str] = []
        page.on("dialog", lambda dialog: asked.append(dialog.message))  # type: ignore[attr-defined]
        page.click("#complete")  # type: ignore[attr-defined]
        page.wait_for_selector("#uploader[data-upload-state=complete]", state="attached")  # type: ignore[attr-defined]
        assert asked == ["1 file was not sent. Mark the upload complete anyway?"]

    def test_a_dropped_folder_with_unreadable_entries_still_gives_the_rest(
        self, world: World, browser: object
    ) -> None:
        page = _open_upload_page(browser, world)
        found = page.evaluate(WALK_FAULTY_DROP)  # type: ignore[attr-defined]
        assert found == [
            ["CD/IM1", "IM1", False],
            ["CD/IM2", None, True],
            ["CD/SUB", None, True],
            ["loose.zip", "loose.zip", False],
        ]

    def test_a_file_not_sent_is_sent_when_chosen_again_and_the_warning_goes(
        self, world: World, browser: object, tmp_path: Path
    ) -> None:
        page = _open_upload_page(browser, world)
        disc = tmp_path / "disc"
        _, gone, lost = _lose_a_file(page, disc)
        page.wait_for_selector("#warnings li[data-code=not-sent]")  # type: ignore[attr-defined]
        gone.write_bytes(lost)  # the disc is back
        page.set_input_files("#pick-folder", str(disc))  # type: ignore[attr-defined]
        _wait_for(page, lambda: page.locator("#file-rows tr[data-state=stored]").count() == 2)  # type: ignore[attr-defined]

        assert page.locator("#file-rows tr").count() == 2  # type: ignore[attr-defined]
        assert page.is_hidden("#refused-panel")  # type: ignore[attr-defined]
        page.wait_for_selector("#warnings li[data-code=not-sent]", state="detached")  # type: ignore[attr-defined]
        assert stored_counts(world) == (2, 0)  # the slice that had arrived was not sent again
        asked: list[str] = []
        page.on("dialog", lambda dialog: asked.append(dialog.message))  # type: ignore[attr-defined]
        page.click("#complete")  # type: ignore[attr-defined]
        page.wait_for_selector("#uploader[data-upload-state=complete]", state="attached")  # type: ignore[attr-defined]
        assert asked == []  # nothing left unsent: no question


# ---- the page tells the truth about what arrived ------------------------------


def _small_series(folder: Path, count: int, **kwargs: object) -> Path:
    write_series(folder, make_ct_series(count, rows=64, columns=64, **kwargs))  # type: ignore[arg-type]
    return folder


def _wait_settled(page: object, total: int, seconds: float = 30.0) -> None:
    page.wait_for_function(  # type: ignore[attr-defined]
        f"() => Number({PANEL}.filesTotal) === {total} && {PANEL}.filesDone === {PANEL}.filesTotal",
        timeout=seconds * 1000,
    )


def _verdict(page: object) -> str:
    page.wait_for_selector("#summary-panel", state="visible")  # type: ignore[attr-defined]
    page.wait_for_function("() => document.getElementById('summary-verdict').textContent !== ''")  # type: ignore[attr-defined]
    return page.inner_text("#summary-verdict")  # type: ignore[attr-defined]


def _log_in_at(page: object, world: World) -> None:
    """The login form reached from a link: password and code, wherever it leads."""
    page.fill("#email", world.email)  # type: ignore[attr-defined]
    page.fill("#password", PASSWORD)  # type: ignore[attr-defined]
    page.click("#login")  # type: ignore[attr-defined]
    page.wait_for_selector("#code")  # type: ignore[attr-defined]
    # the next step's code (one step of tolerance): this step's was used at the first login
    code = pyotp.TOTP(world.totp_secret).at(time.time() + 30)
    page.fill("#code", code)  # type: ignore[attr-defined]
    page.click("#verify")  # type: ignore[attr-defined]


class TestUploadPageTellsWhatDidNotArrive:
    def test_after_a_reload_mid_upload_the_page_says_it_was_interrupted_and_completing_waits(
        self, world: World, browser: object, tmp_path: Path
    ) -> None:
        folder = _small_series(tmp_path / "ct", 12, seed=21)
        page = _open_upload_page(browser, world)
        created: list[str] = []

        def cut_after_five(route: object) -> None:
            if route.request.method == "POST":  # type: ignore[attr-defined]
                created.append("POST")
                if len(created) > 5:
                    route.abort("connectionrefused")  # type: ignore[attr-defined]
                    return
            route.continue_()  # type: ignore[attr-defined]

        page.route("**/api/uploads/*/files", cut_after_five)  # type: ignore[attr-defined]
        page.set_input_files("#pick-folder", str(folder))  # type: ignore[attr-defined]
        page.wait_for_function(f"() => Number({PANEL}.filesReceived) >= 5")  # type: ignore[attr-defined]
        page.reload()  # type: ignore[attr-defined]
        page.unroute("**/api/uploads/*/files")  # type: ignore[attr-defined]
        _wait_ready(page)
        note = page.wait_for_selector("#resume-note", state="visible")  # type: ignore[attr-defined]
        verdict = _verdict(page)
        _shot(page, "8-interrupted")

        assert "interrupted" in note.inner_text() and "may be missing" in note.inner_text()
        green = "rgb(218, 251, 225)"  # the success notice
        assert note.evaluate("n => getComputedStyle(n).backgroundColor") != green
        assert "No problem found" not in verdict and "interrupted" in verdict
        assert page.is_visible("#warnings li[data-code=interrupted]")  # type: ignore[attr-defined]
        assert "may be incomplete" in page.inner_text("#warnings")  # type: ignore[attr-defined]
        assert page.is_disabled("#complete")  # type: ignore[attr-defined]
        assert pseudonymised_states(world) == ["None"]  # nothing handed on

        # chosen again: the rest arrives, the warning goes, completing asks nothing
        page.set_input_files("#pick-folder", str(folder))  # type: ignore[attr-defined]
        _wait_settled(page, 12)
        page.wait_for_selector("#complete:enabled")  # type: ignore[attr-defined]
        assert "No problem found" in _verdict(page)
        asked: list[str] = []
        page.on("dialog", lambda dialog: asked.append(dialog.message))  # type: ignore[attr-defined]
        page.click("#complete")  # type: ignore[attr-defined]
        page.wait_for_selector("#uploader[data-upload-state=complete]", state="attached")  # type: ignore[attr-defined]
        assert asked == []
        assert stored_counts(world)[0] == 12

    def test_files_refused_for_one_reason_are_counted_in_the_verdict_and_grouped(
        self, world: World, browser: object, tmp_path: Path
    ) -> None:
        ours = _small_series(tmp_path / "ours", 5, seed=22)
        other = SyntheticPatient(family_name="Otherly", patient_id="OTH0000001")
        theirs = _small_series(tmp_path / "theirs", 4, seed=23, patient=other)
        page = _open_upload_page(browser, world)
        page.set_input_files("#pick-folder", str(ours))  # type: ignore[attr-defined]
        _wait_settled(page, 5)
        page.set_input_files("#pick-folder", str(theirs))  # type: ignore[attr-defined]
        _wait_settled(page, 9)
        page.wait_for_function(
            "() => document.getElementById('summary-verdict').textContent.includes('not accepted')"
        )  # type: ignore[attr-defined]
        verdict = _verdict(page)
        _shot(page, "9-two-patients")

        assert "No problem found" not in verdict
        assert "4 files not accepted, see below" in verdict
        overall = page.inner_text("#overall-text")  # type: ignore[attr-defined]
        assert "5 received" in overall and "4 not accepted" in overall
        lines = page.locator("#refused-list > li")  # type: ignore[attr-defined]
        assert lines.count() == 1
        assert lines.first.inner_text().startswith(
            "4 files: this case already holds a study of another patient"
        )
        assert page.is_hidden("#not-sent-panel")  # type: ignore[attr-defined]
        assert page.is_enabled("#complete")  # type: ignore[attr-defined]

    def test_a_zip_refused_whole_is_a_problem_and_leaves_nothing_to_complete(
        self, world: World, browser: object, tmp_path: Path
    ) -> None:
        archive = tmp_path / "letters.zip"
        with zipfile.ZipFile(archive, "w") as writer:
            writer.writestr("referral.txt", "please make a knee implant\n")
            writer.writestr("consent.txt", "signed\n")
        page = _open_upload_page(browser, world)
        _drop(page, archive)
        _wait_settled(page, 1)
        verdict = _verdict(page)
        _shot(page, "10-zip-refused")

        assert "No problem found" not in verdict
        assert verdict.startswith("No images have been stored yet")
        assert "not accepted" in verdict
        assert page.is_disabled("#complete")  # type: ignore[attr-defined]
        refused = page.inner_text("#refused-list")  # type: ignore[attr-defined]
        assert "not a scan image (DICOM) file" in refused  # plain words, not the API's
        assert "preamble" not in refused

    def test_when_the_session_ends_sending_stops_and_one_note_leads_back_through_the_login(
        self, world: World, browser: object, tmp_path: Path
    ) -> None:
        folder = _small_series(tmp_path / "ct", 40, seed=24)
        page = _open_upload_page(browser, world)
        context = page.context  # type: ignore[attr-defined]
        created: list[str] = []

        def expire_after_six(route: object) -> None:
            if route.request.method == "POST":  # type: ignore[attr-defined]
                created.append("POST")
                if len(created) == 6:
                    context.clear_cookies()  # the session is gone from here on
            route.continue_()  # type: ignore[attr-defined]

        page.route("**/api/uploads/*/files", expire_after_six)  # type: ignore[attr-defined]
        page.set_input_files("#pick-folder", str(folder))  # type: ignore[attr-defined]
        _wait_settled(page, 40)
        note = page.wait_for_selector("#session-note", state="visible")  # type: ignore[attr-defined]
        _shot(page, "11-session-ended")

        refused_401 = [r for r in world.responses if r[1] == "POST" and r[3] in (401, 403)]
        assert 1 <= len(refused_401) <= 4  # only the files in flight; the queue stopped
        not_sent = _panel(page, "filesNotSent")
        assert not_sent >= 30
        assert f"{not_sent} files were not sent" in note.inner_text()
        lines = page.locator("#not-sent-list > li")  # type: ignore[attr-defined]
        assert lines.count() == 1  # one line, not one per file
        assert lines.first.inner_text().startswith(f"{not_sent} files: your session ended")
        assert page.is_hidden("#refused-panel")  # type: ignore[attr-defined]
        assert page.eval_on_selector("#overall-bar", "bar => bar.value") < 1  # type: ignore[attr-defined]
        assert page.is_disabled("#complete")  # type: ignore[attr-defined]

        page.unroute("**/api/uploads/*/files")  # type: ignore[attr-defined]
        page.click("#login-again")  # type: ignore[attr-defined]
        page.wait_for_url(f"{world.server.url}/login?next=/cases/{world.case_id}/upload")  # type: ignore[attr-defined]
        _log_in_at(page, world)
        page.wait_for_url(f"{world.server.url}/cases/{world.case_id}/upload")  # type: ignore[attr-defined]
        _wait_ready(page)
        page.set_input_files("#pick-folder", str(folder))  # type: ignore[attr-defined]
        _wait_settled(page, 40)
        assert _panel(page, "filesReceived") == 40
        assert stored_counts(world)[0] == 40


class TestUploadPageForKeyboardAndScreenReaders:
    def test_the_pickers_show_keyboard_focus_and_the_verdict_is_announced_and_focused(
        self, world: World, browser: object, tmp_path: Path
    ) -> None:
        page = _open_upload_page(browser, world)
        for _ in range(20):
            page.keyboard.press("Tab")  # type: ignore[attr-defined]
            if page.evaluate("document.activeElement.id") == "pick-folder":  # type: ignore[attr-defined]
                break
        outline = page.eval_on_selector(  # type: ignore[attr-defined]
            "label[for=pick-folder]", "l => getComputedStyle(l).outlineStyle"
        )
        assert outline == "solid"
        _shot(page, "12-focus-on-folder-picker")

        assert page.get_attribute("#overall-bar", "aria-label")  # type: ignore[attr-defined]
        assert page.get_attribute("#overall-text", "aria-live") is None  # type: ignore[attr-defined]
        page.set_input_files("#pick-folder", str(_small_series(tmp_path / "ct", 3, seed=25)))  # type: ignore[attr-defined]
        _wait_settled(page, 3)
        page.wait_for_function("() => document.activeElement.id === 'summary-heading'")  # type: ignore[attr-defined]
        status = page.inner_text("#overall-status")  # type: ignore[attr-defined]
        assert status.startswith("All files done.") and "No problem found" in status
        labels = page.eval_on_selector_all(  # type: ignore[attr-defined]
            "#file-rows progress", "bars => bars.map((b) => b.getAttribute('aria-label'))"
        )
        assert len(labels) == 3 and all(label.startswith("Progress of ") for label in labels)
