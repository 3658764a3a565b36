// The upload page of one case: gathers dropped or picked files, sends several
// at once with the tus client, shows per-file and overall progress with speed
// and time left, lists refused files with their reasons, resumes after a
// network drop or a page reload, and shows the series summary at the end.
// File names stay in this page: only bytes and the file kind are sent.
"use strict";

import { fromDrop, fromInput, kindOf } from "./upload-files.js";
import { FINISHED, Speed, addRow, dropRow, renderProgress, renderRefusals, tally } from "./upload-progress.js";
import { Memory, fingerprint } from "./upload-store.js";
import { renderSummary } from "./upload-summary.js";
import { TusError, TusUpload, errorOf, send } from "./upload-tus.js";

const root = document.getElementById("uploader");
const config = {
  caseId: root.dataset.caseId,
  csrf: root.dataset.csrf,
  chunkSize: Number(root.dataset.chunkBytes) || 4 * 1024 * 1024,
  parallel: Number(root.dataset.parallel) || 4,
  stallMs: Number(root.dataset.stallMs) || 30000,
};
const $ = (id) => document.getElementById(id);
const memory = new Memory(config.caseId);
// interrupted: a remembered upload found after a reload, its files not chosen again yet
const upload = { id: null, creating: null, complete: false, interrupted: false };
// ended: the server answered 401/403 (the session expired or was ended): nothing more is sent
const session = { ended: false };
const SESSION_ENDED = "your session ended before this file was sent";
const jobs = [];
const seen = new Set();
const queue = [];
let inFlight = 0;
let transferred = 0;
const speed = new Speed();
let renderPending = false;
let retryingJobs = 0;
let retryingCalls = 0;
let refusalsChanged = false;
let focusVerdict = false;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// A JSON request to the upload API, retried while the server is unreachable.
async function api(method, url, body) {
  let waiting = false;
  try {
    for (let attempt = 0; ; attempt += 1) {
      try {
        const headers = { "X-CSRF-Token": config.csrf, Accept: "application/json" };
        if (body !== undefined) headers["Content-Type"] = "application/json";
        const response = await send(method, url, { headers, body: body === undefined ? null : JSON.stringify(body) });
        if (response.status >= 200 && response.status < 300) return response.json();
        if (response.status === 401 || response.status === 403) sessionEnded();
        throw errorOf(response, "the server refused the request");
      } catch (error) {
        if (!(error instanceof TusError) || !error.retryable || attempt >= 8) throw error;
        if (!waiting) {
          waiting = true;
          retryingCalls += 1;
          showNetwork();
        }
        await sleep(Math.min(1000 * 2 ** attempt, 15000));
      }
    }
  } finally {
    if (waiting) {
      retryingCalls -= 1;
      showNetwork();
    }
  }
}

// The "connection lost" note shows while any request waits to be retried.
function showNetwork() {
  $("network-note").hidden = retryingJobs + retryingCalls === 0;
}

// ---- the upload this page fills --------------------------------------------

async function ensureUpload() {
  await ready;
  if (upload.id) return upload.id;
  if (!upload.creating) {
    upload.creating = api("POST", "/api/uploads", { case_id: config.caseId }).then((created) => {
      upload.id = created.upload_id;
      upload.complete = false;
      memory.setUpload(upload.id);
      return upload.id;
    });
    upload.creating.catch(() => { upload.creating = null; });
  }
  return upload.creating;
}

async function resumeRemembered() {
  const remembered = memory.uploadId;
  if (!remembered) return;
  try {
    const known = await api("GET", `/api/uploads/${remembered}`);
    if (!known || known.state !== "open") {
      memory.clear();
      return;
    }
    upload.id = remembered;
    $("resume-count").textContent = String(known.files.stored + known.files.duplicate);
    $("resume-note").hidden = false;
    if (!jobs.length) {
      // Files may be missing: completing waits until they are chosen again.
      upload.interrupted = true;
      $("complete").disabled = true;
      showSummary();
    }
  } catch (error) {
    if (error.status === 404) memory.clear(); // otherwise keep it for the next visit
  }
}

// ---- files ----------------------------------------------------------------

const NOTHING = new Blob([]);
const UNREADABLE = "this could not be read from your computer: choose the folder or files with the buttons instead";

async function addFiles(found) {
  if (session.ended) {
    $("session-note").focus(); // log in again first: this page can send nothing more
    return;
  }
  found.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const { file, path, unreadable } of found) {
    if (unreadable) {
      const job = { path, file: NOTHING, kind: "unreadable", state: "queued", done: 0, detail: UNREADABLE, retrying: false };
      jobs.push(job);
      addRow(job);
      finish(job, "failed");
      continue;
    }
    const print = await fingerprint(path, file);
    if (seen.has(print)) continue;
    seen.add(print);
    forgetNotSent(path);
    const job = { path, file, print, kind: kindOf(path, file), state: "queued", done: 0, detail: "", retrying: false };
    jobs.push(job);
    addRow(job);
    if (job.kind === "skip") {
      finish(job, "skipped");
    } else {
      queue.push(job);
    }
  }
  if (found.length) upload.interrupted = false;
  $("progress-panel").hidden = false;
  $("complete").disabled = true;
  pump();
  if (!inFlight && !queue.length) drained();
  scheduleRender();
}

// A file chosen again after it was not sent replaces its "not sent" row
// (by its path: a file put back on disk has a new modification time).
function forgetNotSent(path) {
  for (let i = jobs.length - 1; i >= 0; i -= 1) {
    if (jobs[i].path === path && jobs[i].state === "failed") {
      dropRow(jobs[i]);
      jobs.splice(i, 1);
      refusalsChanged = true;
    }
  }
}

function pump() {
  while (inFlight < config.parallel && queue.length) {
    const job = queue.shift();
    inFlight += 1;
    run(job).finally(() => {
      inFlight -= 1;
      pump();
      if (!inFlight && !queue.length) drained();
    });
  }
}

async function run(job) {
  if (session.ended) return notSentAfterLogout(job);
  try {
    await ensureUpload();
  } catch (error) {
    return fail(job, error);
  }
  const remembered = memory.url(job.print);
  job.state = remembered ? "checking" : "sending";
  scheduleRender();
  const tus = new TusUpload(job.file, {
    endpoint: `/api/uploads/${upload.id}/files`,
    url: remembered,
    kind: job.kind,
    chunkSize: config.chunkSize,
    stallMs: config.stallMs,
    csrf: config.csrf,
    onUrl: (url) => memory.remember(job.print, url),
    onResume: (offset) => { job.done = offset; job.state = "sending"; scheduleRender(); },
    onProgress: (offset) => progressed(job, offset),
    onRetry: (delay) => retrying(job, delay),
  });
  try {
    const sent = await tus.start();
    job.done = job.file.size;
    if (["stored", "duplicate", "skipped"].includes(sent.outcome)) {
      finish(job, sent.outcome);
    } else {
      await settle(job, tus.url);
    }
  } catch (error) {
    fail(job, error);
  }
}

function progressed(job, offset) {
  if (offset > job.done) transferred += offset - job.done;
  job.done = offset;
  if (job.state !== "sending") job.state = "sending";
  scheduleRender();
}

function retrying(job, delay) {
  const now = delay !== null;
  if (now !== job.retrying) retryingJobs += now ? 1 : -1;
  job.retrying = now;
  showNetwork();
  scheduleRender();
}

// Ask the server how a fully sent file ended (ZIPs, resumed files).
async function settle(job, url) {
  job.state = "processing";
  scheduleRender();
  for (let attempt = 0; attempt < 30; attempt += 1) {
    const result = await api("GET", `${url}/result`);
    if (result && FINISHED.has(result.state)) {
      job.refusedEntries = result.refused || [];
      return finish(job, result.state);
    }
    await sleep(Math.min(500 * (attempt + 1), 3000));
  }
  job.detail = "the server is still checking this file";
  return finish(job, "processing");
}

function fail(job, error) {
  retrying(job, null);
  const status = error instanceof TusError ? error.status : 0;
  if (status === 401 || status === 403) {
    sessionEnded();
    return notSentAfterLogout(job);
  }
  const refused = status >= 400 && status < 500;
  job.detail = error.message || "unknown error";
  job.code = error.error || "";
  if (!refused) seen.delete(job.print); // not sent: choosing the file again sends it
  finish(job, refused ? "refused" : "failed");
}

function notSentAfterLogout(job) {
  job.detail = SESSION_ENDED;
  seen.delete(job.print);
  finish(job, "failed");
}

// The first 401/403 stops the queue: every file still waiting is not sent,
// and one note says why, with a link back to this page through the login.
function sessionEnded() {
  if (session.ended) return;
  session.ended = true;
  for (const job of queue.splice(0)) notSentAfterLogout(job);
  $("complete").disabled = true;
  $("session-note").hidden = false;
  scheduleRender();
}

function finish(job, state) {
  job.state = state;
  if (state === "failed") job.done = 0; // what went out was not received
  else job.done = job.file.size;
  if (state === "refused" || state === "partial" || state === "failed") refusalsChanged = true;
  scheduleRender();
}

// ---- progress -------------------------------------------------------------

function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(() => {
    renderPending = false;
    render();
  }, 100);
}

function render() {
  renderProgress(jobs, speed.rate(transferred), retryingJobs + retryingCalls > 0);
  if (session.ended) {
    const count = notSent();
    $("session-count").textContent = `${count} file${count === 1 ? " was" : "s were"} not sent.`;
  }
  if (refusalsChanged) {
    refusalsChanged = false;
    renderRefusals(jobs);
  }
  if (inFlight || queue.length) scheduleRender();
}

// ---- the end ----------------------------------------------------------------

async function drained() {
  focusVerdict = jobs.length > 0;
  render();
  if (session.ended) {
    say(`Sending stopped: your session has ended. ${$("session-count").textContent}`);
    $("session-note").focus();
    return;
  }
  if (!upload.id) return;
  const summary = await showSummary();
  // Nothing stored, or an interrupted upload not chosen again: nothing to complete yet.
  $("complete").disabled = upload.complete || upload.interrupted || !summary || !summary.series.length;
}

// Files this page could not send: the server cannot know of them.
function notSent() {
  return jobs.filter((job) => job.state === "failed").length;
}

// The page's own findings for the summary: {code, message, verdict}, the
// verdict being the short form counted in the summary's first line.
function pageWarnings() {
  const warnings = [];
  const counts = tally(jobs);
  if (upload.interrupted) {
    warnings.push({
      code: "interrupted",
      message: "The upload was interrupted (the page was reloaded): the scan may be incomplete. " +
        "Select or drop the same folder or files again to finish it.",
      verdict: "the upload was interrupted and may be incomplete",
    });
  }
  if (counts.refused) {
    const files = counts.refused === 1 ? "1 file was" : `${counts.refused} files were`;
    warnings.push({
      code: "not-accepted",
      message: `${files} not accepted (see "Files not accepted" above): the scan may be incomplete.`,
      verdict: `${counts.refused} file${counts.refused === 1 ? "" : "s"} not accepted, see below`,
    });
  }
  const count = notSent();
  if (count) {
    const files = count === 1 ? "1 file was" : `${count} files were`;
    warnings.push({
      code: "not-sent",
      message: `${files} not sent (see the list above): the scan may be incomplete. Select them again to send them.`,
      verdict: `${count} file${count === 1 ? "" : "s"} not sent`,
    });
  }
  return warnings;
}

// Fill the summary; returns the summary shown (null if it could not be had).
// After a batch of files, the verdict is announced and its heading focused.
async function showSummary() {
  let summary = null;
  try {
    summary = await api("GET", `/api/uploads/${upload.id}/summary`);
    renderSummary(summary, pageWarnings());
  } catch (error) {
    $("summary-verdict").textContent = session.ended
      ? "The summary could not be shown: your session has ended."
      : `The summary could not be shown: ${error.message}`;
    $("summary-panel").hidden = false;
  }
  if (focusVerdict) {
    focusVerdict = false;
    say(`All files done. ${$("summary-verdict").textContent}`);
    $("summary-heading").focus();
  }
  return summary;
}

// Tell screen readers (through the polite status line).
function say(text) {
  $("overall-status").textContent = text;
}

async function complete() {
  if (upload.interrupted && !window.confirm(
    "The upload was interrupted: files may be missing. Select the same folder or files again first. " +
      "Mark the upload complete anyway?",
  )) {
    return;
  }
  const count = notSent();
  if (count && !window.confirm(`${count} file${count === 1 ? " was" : "s were"} not sent. Mark the upload complete anyway?`)) {
    return;
  }
  const button = $("complete");
  button.disabled = true;
  $("complete-status").textContent = "Marking the upload complete…";
  try {
    const done = await api("POST", `/api/uploads/${upload.id}/complete`);
    upload.complete = true;
    memory.clear();
    const studies = (done.studies || []).length;
    $("complete-status").textContent =
      `Upload complete: ${studies} stud${studies === 1 ? "y" : "ies"} handed over. You can close this page.`;
    root.dataset.uploadState = "complete";
    await showSummary();
    upload.id = null;
    upload.creating = null;
  } catch (error) {
    $("complete-status").textContent = `Not marked complete: ${error.message}`;
    button.disabled = false;
  }
}

// ---- wiring -----------------------------------------------------------------

function wire() {
  const zone = $("drop-zone");
  zone.addEventListener("dragenter", (event) => event.preventDefault());
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    $("drop-error").hidden = true;
    fromDrop(event.dataTransfer).then(addFiles).catch(() => { $("drop-error").hidden = false; });
  });
  for (const id of ["pick-folder", "pick-files"]) {
    const input = $(id);
    input.addEventListener("change", () => {
      addFiles(fromInput(input));
      input.value = "";
    });
  }
  $("complete").addEventListener("click", complete);
  window.addEventListener("beforeunload", (event) => {
    if (inFlight || queue.length) {
      event.preventDefault();
      event.returnValue = "";
    }
  });
}

const ready = resumeRemembered().finally(() => { root.dataset.ready = "true"; });
wire();
