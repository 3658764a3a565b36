// Turning what the user drops or picks into a flat list of {file, path}:
// whole folders (walked with webkitGetAsEntry, the standard way every current
// browser exposes a dropped directory), a folder picked with the
// webkitdirectory input, or plain files. Also decides what each file is:
// a ZIP archive, a DICOM file, or something skipped quietly (the DICOMDIR
// index of a CD and operating-system leftovers), like the server does.
"use strict";

const JUNK_NAMES = new Set([".ds_store", "thumbs.db", "desktop.ini", "dicomdir", "autorun.inf"]);
const JUNK_PREFIXES = ["._", "__macosx"];

// "skip", "zip" or "dicom" for a file at a relative path.
export function kindOf(path, file) {
  const parts = path.toLowerCase().split("/").filter((part) => part);
  const name = parts.length ? parts[parts.length - 1] : "";
  if (!name || JUNK_NAMES.has(name) || parts.some((p) => JUNK_PREFIXES.some((x) => p.startsWith(x)))) {
    return "skip";
  }
  if (name.endsWith(".zip") || file.type === "application/zip" || file.type === "application/x-zip-compressed") {
    return "zip";
  }
  return "dicom";
}

export function fromInput(input) {
  return Array.from(input.files || []).map((file) => ({ file, path: file.webkitRelativePath || file.name }));
}

function fileOf(entry) {
  return new Promise((resolve, reject) => entry.file(resolve, reject));
}

function readBatch(reader) {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

// Every file under a directory entry (readEntries answers in batches). An
// entry that cannot be read (a broken link on a CD, a folder without read
// permission) is listed as {file: null, path, unreadable: true}, so that the
// rest of the drop still goes and the page can say what was left out.
async function walk(entry, found) {
  const path = entry.fullPath.replace(/^\/+/, "");
  if (entry.isFile) {
    try {
      found.push({ file: await fileOf(entry), path });
    } catch (error) {
      found.push({ file: null, path, unreadable: true });
    }
    return;
  }
  if (!entry.isDirectory) return;
  const reader = entry.createReader();
  for (;;) {
    let batch;
    try {
      batch = await readBatch(reader);
    } catch (error) {
      found.push({ file: null, path, unreadable: true });
      return;
    }
    if (!batch.length) return;
    for (const child of batch) await walk(child, found);
  }
}

// Entries and files must be taken from the DataTransfer during the drop event
// itself: call this synchronously in the handler, then await the returned
// promise. Each item is a folder or file entry to walk, or else a plain file.
export function fromDrop(dataTransfer) {
  const items = Array.from(dataTransfer.items || []).filter((item) => item.kind === "file");
  if (!items.length) {
    const files = Array.from(dataTransfer.files || []);
    return Promise.resolve(files.map((file) => ({ file, path: file.name })));
  }
  const taken = items.map((item) => {
    const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    return { entry, file: entry ? null : item.getAsFile() };
  });
  return (async () => {
    const found = [];
    for (const { entry, file } of taken) {
      if (entry) await walk(entry, found);
      else if (file) found.push({ file, path: file.name });
    }
    return found;
  })();
}
