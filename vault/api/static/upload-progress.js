// Showing progress: one table row per file (its name stays in this page),
// the overall bar with files, bytes, speed and time left, and the lists of
// files not accepted (with the server's reasons, one line per reason) and of
// files never sent. Everything is set as text.
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
// The server's reason codes in plain words for the page (the API keeps its own text).
const PLAIN_REASONS = {
  "not-dicom": "not a scan image (DICOM) file",
};
// Screen readers hear the overall line at most this often (or every few files).
const ANNOUNCE_EVERY_MS = 10000;
const ANNOUNCE_EVERY_FILES = 10;
const announced = { at: 0, files: -1 };

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
  job.progress.setAttribute("aria-label", `Progress of ${job.path}`);
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

function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

// How many files were received, not accepted and not sent (a ZIP counts
// the entries it refused as files not accepted).
export function tally(jobs) {
  const counts = { received: 0, refused: 0, notSent: 0 };
  for (const job of jobs) {
    if (job.kind === "skip") continue;
    if (job.state === "stored" || job.state === "duplicate") counts.received += 1;
    else if (job.state === "failed") counts.notSent += 1;
    else if (job.state === "refused") counts.refused += refusalsOf(job).length;
    else if (job.state === "partial") {
      counts.received += 1;
      counts.refused += refusalsOf(job).length;
    }
  }
  return counts;
}

// Redraw every row and the overall line; ``rate`` in bytes per second,
// ``waiting`` while the connection is lost (no speed is shown then). A file
// not sent counts for its size, but none of its bytes count as sent.
export function renderProgress(jobs, rate, waiting) {
  let total = 0;
  let done = 0;
  let finished = 0;
  const sending = jobs.filter((job) => job.kind !== "skip");
  for (const job of sending) {
    total += job.file.size;
    if (job.state !== "failed") done += Math.min(job.done, job.file.size);
    if (isSettled(job)) finished += 1;
  }
  for (const job of jobs) updateRow(job);
  $("overall-bar").value = total ? done / total : 1;
  const counts = tally(jobs);
  const outcome = [
    counts.received ? `${counts.received} received` : "",
    counts.refused ? `${counts.refused} not accepted` : "",
    counts.notSent ? `${counts.notSent} not sent` : "",
  ].filter((part) => part);
  const parts = [
    `${finished} of ${plural(sending.length, "file", "files")} done` + (outcome.length ? ` (${outcome.join(", ")})` : ""),
    `${humanBytes(done)} of ${humanBytes(total)} sent`,
  ];
  if (waiting) {
    parts.push("waiting for the connection");
  } else if (rate > 0 && finished < sending.length) {
    parts.push(`${humanBytes(rate)}/s`, humanSeconds((total - done) / rate));
  }
  const text = parts.filter((part) => part).join(" · ");
  $("overall-text").textContent = text;
  announce(text, finished, finished === sending.length);
  const panel = $("progress-panel");
  panel.dataset.filesTotal = String(sending.length);
  panel.dataset.filesDone = String(finished);
  panel.dataset.filesReceived = String(counts.received);
  panel.dataset.filesRefused = String(counts.refused);
  panel.dataset.filesNotSent = String(counts.notSent);
}

// The overall line for screen readers (#overall-status, polite): only every
// few files or seconds, so that it can be listened to; the final verdict is
// announced by the page when everything has settled.
function announce(text, finished, settled) {
  const now = performance.now();
  if (settled || finished === announced.files) return;
  if (finished - announced.files < ANNOUNCE_EVERY_FILES && now - announced.at < ANNOUNCE_EVERY_MS) return;
  announced.at = now;
  announced.files = finished;
  $("overall-status").textContent = text;
}

// A reason in the words of this page: plain words for a known reason code.
export function plainReason(code, detail) {
  return PLAIN_REASONS[code] || detail || "not accepted";
}

function refusalsOf(job) {
  if (job.refusedEntries && job.refusedEntries.length) {
    return job.refusedEntries.map((entry) => ({
      name: entry.entry === null || entry.entry === undefined ? job.path : `${job.path}, entry ${entry.entry + 1}`,
      reason: plainReason(entry.error, entry.detail),
    }));
  }
  return job.state === "partial" ? [] : [{ name: job.path, reason: plainReason(job.code, job.detail) }];
}

// One list, grouped by reason: a reason given for one file names it; a reason
// given for many says how many, with their names folded under it.
function fillGrouped(list, items) {
  const groups = new Map();
  for (const item of items) {
    if (!groups.has(item.reason)) groups.set(item.reason, []);
    groups.get(item.reason).push(item.name);
  }
  list.replaceChildren();
  for (const [reason, names] of groups) {
    const line = document.createElement("li");
    const label = document.createElement("strong");
    if (names.length === 1) {
      label.textContent = names[0];
      line.append(label, `: ${reason}`);
    } else {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      label.textContent = `${names.length} files`;
      summary.append(label, `: ${reason}`);
      const inner = document.createElement("ul");
      for (const name of names) {
        const entry = document.createElement("li");
        entry.textContent = name;
        inner.appendChild(entry);
      }
      details.append(summary, inner);
      line.appendChild(details);
    }
    line.dataset.count = String(names.length);
    list.appendChild(line);
  }
}

// Redraw the lists of files not accepted (the server's reasons) and not sent.
export function renderRefusals(jobs) {
  const refused = [];
  const notSent = [];
  for (const job of jobs) {
    if (job.state === "refused" || job.state === "partial") refused.push(...refusalsOf(job));
    else if (job.state === "failed") notSent.push({ name: job.path, reason: job.detail || "not sent" });
  }
  fillGrouped($("refused-list"), refused);
  fillGrouped($("not-sent-list"), notSent);
  $("refused-panel").hidden = !refused.length;
  $("not-sent-panel").hidden = !notSent.length;
}

// Take a file that was not sent off the page (it is being sent again).
export function dropRow(job) {
  job.row.remove();
}
