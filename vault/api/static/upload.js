// The upload page of one case: gathers dropped or picked files, sends several
// at once with the tus client, shows per-file and overall progress with speed
// and time left, lists refused files with their reasons, resumes after a
// network drop or a page reload, and shows the series summary at the end.
// File names stay in this page: only bytes and the file kind are sent.
"use strict";

import { fromDrop, fromInput, kindOf } from "./upload-files.js";
import { FINISHED, Speed, addRow, dropRow, listRefusal, renderProgress } from "./upload-progress.js";
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
const upload = { id: null, creating: null, complete: false };
const jobs = [];
const seen = new Set();
const queue = [];
let inFlight = 0;
let transferred = 0;
const speed = new Speed();
let renderPending = false;
let retryingJobs = 0;
let retryingCalls = 0;

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
      $("complete").disabled = false;
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
  const refused = status >= 400 && status < 500 && status !== 401 && status !== 403;
  job.detail = status === 401 || status === 403
    ? "your session has ended: log in again, then select the files again"
    : error.message || "unknown error";
  if (!refused) seen.delete(job.print); // not sent: choosing the file again sends it
  finish(job, refused ? "refused" : "failed");
}

function finish(job, state) {
  job.state = state;
  if (state !== "failed") job.done = job.file.size;
  if (state === "refused" || state === "partial" || state === "failed") listRefusal(job);
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
  if (inFlight || queue.length) scheduleRender();
}

// ---- the end ----------------------------------------------------------------

async function drained() {
  scheduleRender();
  if (!upload.id) return;
  await showSummary();
  $("complete").disabled = upload.complete;
}

// Files this page could not send: the server cannot know of them.
function notSent() {
  return jobs.filter((job) => job.state === "failed").length;
}

function pageWarnings() {
  const count = notSent();
  if (!count) return [];
  const files = count === 1 ? "1 file was" : `${count} files were`;
  const message = `${files} not sent (see the list above): the scan may be incomplete. Select them again to send them.`;
  return [{ code: "not-sent", message }];
}

async function showSummary() {
  try {
    renderSummary(await api("GET", `/api/uploads/${upload.id}/summary`), pageWarnings());
  } catch (error) {
    $("summary-verdict").textContent = `The summary could not be shown: ${error.message}`;
    $("summary-panel").hidden = false;
  }
}

async function complete() {
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
