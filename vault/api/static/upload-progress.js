// Showing progress: one table row per file (its name stays in this page),
// the overall bar with files, bytes, speed and time left, and the list of
// files not accepted with the server's reasons. Everything is set as text.
"use strict";

export const FINISHED = new Set(["stored", "duplicate", "refused", "partial", "skipped"]);
const STATE_WORDS = {
  queued: "Waiting",
  checking: "Checking what the server has",
  sending: "Sending",
  retrying: "Connection lost, retrying",
  processing: "Checking the file",
  stored: "Received",
  duplicate: "Already received",
  partial: "Partly accepted",
  refused: "Not accepted",
  skipped: "Skipped (not part of the scan)",
  failed: "Not sent",
};
const SPEED_WINDOW_MS = 5000;

const $ = (id) => document.getElementById(id);

export function humanBytes(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

function humanSeconds(seconds) {
  if (!isFinite(seconds)) return "";
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s left`;
  if (seconds < 3600) return `about ${Math.round(seconds / 60)} min left`;
  return `about ${(seconds / 3600).toFixed(1)} h left`;
}

// Bytes per second sent over the last few seconds.
export class Speed {
  constructor() {
    this.samples = [];
  }

  rate(transferred) {
    const now = performance.now();
    this.samples.push([now, transferred]);
    while (this.samples.length > 2 && now - this.samples[0][0] > SPEED_WINDOW_MS) this.samples.shift();
    const [then, before] = this.samples[0];
    return now - then > 250 ? ((transferred - before) * 1000) / (now - then) : 0;
  }
}

// Whether a file needs nothing more from the page.
export function isSettled(job) {
  return FINISHED.has(job.state) || job.state === "failed" || (job.state === "processing" && job.detail !== "");
}

function cell(text, className) {
  const node = document.createElement("td");
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Add the row of a new file to the table; keeps its parts on the job.
export function addRow(job) {
  const row = document.createElement("tr");
  const bar = cell();
  job.progress = document.createElement("progress");
  job.progress.max = 1;
  job.progress.value = 0;
  bar.appendChild(job.progress);
  job.stateCell = cell("", "state");
  row.append(cell(job.path, "name"), cell(humanBytes(job.file.size), "size"), bar, job.stateCell);
  $("file-rows").appendChild(row);
  job.row = row;
}

function updateRow(job) {
  job.progress.value = job.file.size ? Math.min(job.done / job.file.size, 1) : FINISHED.has(job.state) ? 1 : 0;
  const words = job.retrying ? STATE_WORDS.retrying : STATE_WORDS[job.state] || job.state;
  job.stateCell.textContent = job.detail && job.state !== "partial" ? `${words}: ${job.detail}` : words;
  job.row.dataset.state = job.state;
}

// Redraw every row and the overall line; ``rate`` in bytes per second,
// ``waiting`` while the connection is lost (no speed is shown then).
export function renderProgress(jobs, rate, waiting) {
  let total = 0;
  let done = 0;
  let finished = 0;
  const sending = jobs.filter((job) => job.kind !== "skip");
  for (const job of sending) {
    total += job.file.size;
    done += Math.min(job.done, job.file.size);
    if (isSettled(job)) finished += 1;
  }
  for (const job of jobs) updateRow(job);
  $("overall-bar").value = total ? done / total : 1;
  const parts = [`${finished} of ${sending.length} files`, `${humanBytes(done)} of ${humanBytes(total)}`];
  if (waiting) {
    parts.push("waiting for the connection");
  } else if (rate > 0 && finished < sending.length) {
    parts.push(`${humanBytes(rate)}/s`, humanSeconds((total - done) / rate));
  }
  $("overall-text").textContent = parts.filter((part) => part).join(" · ");
  const panel = $("progress-panel");
  panel.dataset.filesTotal = String(sending.length);
  panel.dataset.filesDone = String(finished);
}

// List a file (or the entries of a ZIP) the server did not accept, with why.
export function listRefusal(job) {
  const entries = job.refusedEntries && job.refusedEntries.length
    ? job.refusedEntries
    : [{ entry: null, detail: job.detail }];
  for (const entry of entries) {
    const item = document.createElement("li");
    const name = document.createElement("strong");
    const inside = entry.entry === null || entry.entry === undefined ? "" : `, entry ${entry.entry + 1}`;
    name.textContent = job.path + inside;
    item.append(name, `: ${entry.detail || entry.error || "not accepted"}`);
    $("refused-list").appendChild(item);
    (job.listed = job.listed || []).push(item);
  }
  $("refused-panel").hidden = false;
}

// Take a file that was not sent off the page (it is being sent again).
export function dropRow(job) {
  job.row.remove();
  for (const item of job.listed || []) item.remove();
  $("refused-panel").hidden = !$("refused-list").children.length;
}
