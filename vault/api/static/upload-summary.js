// Showing what arrived: the series of the upload, each with its thumbnail and
// the facts that tell the surgeon it is the right scan, and the warnings that
// matter for implant design. Everything is set as text (never as HTML).
"use strict";

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function mm(value) {
  return value === null || value === undefined ? "unknown" : `${Number(value.toFixed(3))} mm`;
}

function fact(list, label, value) {
  list.appendChild(element("dt", "", label));
  list.appendChild(element("dd", "", value));
}

// "J. D., born 1961-05-12, F": the patient as the uploader can confirm them.
function patientOf(identity) {
  if (!identity) return "unknown";
  const parts = [identity.initials || "no name", `born ${identity.birth_date || "on an unknown date"}`];
  if (identity.sex) parts.push(identity.sex);
  return parts.join(", ");
}

function sameIdentity(a, b) {
  return ["initials", "birth_date", "sex", "study_date"].every((key) => (a || {})[key] === (b || {})[key]);
}

// One line under the verdict naming the patient and study date when every
// series agrees; otherwise each card says its own.
function patientLine(series) {
  const first = series.length ? series[0].identity : null;
  if (!first) return "";
  if (!series.every((s) => sameIdentity(s.identity, first))) {
    return "The series differ in patient or study date: check each one below.";
  }
  const when = first.study_date ? `, study of ${first.study_date}` : "";
  return `Patient ${patientOf(first)}${when}. Check that this is the patient of this order.`;
}

function seriesCard(series, warnings) {
  const card = element("article", "series");
  card.dataset.seriesId = series.series_id;
  const image = element("img", "thumbnail");
  image.alt = "Middle image of this series";
  image.loading = "lazy";
  image.width = 160;
  image.height = 160;
  image.addEventListener("error", () => image.replaceWith(element("div", "thumbnail none", "No preview")));
  image.src = series.thumbnail_url;
  card.appendChild(image);
  const body = element("div", "series-facts");
  body.appendChild(element("h3", "", `${series.modality || "?"} · ${series.description || "no description"}`));
  const facts = element("dl");
  fact(facts, "Patient", patientOf(series.identity));
  fact(facts, "Study date", (series.identity && series.identity.study_date) || "unknown");
  fact(facts, "Images", String(series.images));
  fact(facts, "Slice thickness", mm(series.slice_thickness_mm));
  const spacing = series.pixel_spacing_mm;
  fact(facts, "Pixel spacing", spacing ? `${mm(spacing[0])} × ${mm(spacing[1])}` : "unknown");
  body.appendChild(facts);
  const own = warnings.filter((w) => w.series_id === series.series_id);
  if (own.length) {
    const list = element("ul", "series-warnings");
    for (const warning of own) list.appendChild(warningItem(warning));
    body.appendChild(list);
  }
  card.appendChild(body);
  return card;
}

function warningItem(warning) {
  const item = element("li", "warning", warning.message);
  item.dataset.code = warning.code;
  return item;
}

// The first line of the summary: what needs a look, counted; never "no
// problem" while files were refused or not sent or nothing was stored.
function verdictOf(summary, own) {
  const problems = own.map((warning) => warning.verdict || warning.message);
  const count = summary.warnings.length;
  if (count) problems.push(`${count} warning${count === 1 ? "" : "s"}`);
  const listed = problems.join("; ");
  const said = listed ? listed[0].toUpperCase() + listed.slice(1) : "";
  if (!summary.series.length) {
    return `No images have been stored yet: there is nothing to mark complete.${said ? ` ${said}.` : ""}`;
  }
  return said
    ? `${said}: please check before marking the upload complete.`
    : "No problem found in the series received.";
}

// Fill #summary-panel from a summary answer of the API; ``own`` are the page's
// own warnings ({code, message, verdict}), about files the server refused or
// never received and an upload interrupted by a reload.
export function renderSummary(summary, own = []) {
  const panel = document.getElementById("summary-panel");
  const general = document.getElementById("warnings");
  const grid = document.getElementById("series-list");
  general.replaceChildren();
  grid.replaceChildren();
  for (const warning of [...own, ...summary.warnings.filter((w) => !w.series_id)]) {
    general.appendChild(warningItem(warning));
  }
  for (const series of summary.series) grid.appendChild(seriesCard(series, summary.warnings));
  if (!summary.series.length) grid.appendChild(element("p", "", "No images have been stored yet."));
  const verdict = document.getElementById("summary-verdict");
  verdict.textContent = verdictOf(summary, own);
  document.getElementById("summary-patient").textContent = patientLine(summary.series);
  const fine = summary.series.length && !own.length && !summary.warnings.length;
  verdict.className = fine ? "" : "problem";
  panel.hidden = false;
}
