// What the page remembers across a reload, in localStorage, per case: the
// upload it is filling and, per file, the server address of its tus upload.
// Files are known only by a fingerprint: a SHA-256 of their relative path,
// size and modification time, so no file name is stored. Everything is
// forgotten when the upload is marked complete.
"use strict";

const PREFIX = "dicom-vault.upload.";

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

// A non-cryptographic fallback for pages opened outside a secure context
// (crypto.subtle is only there on https and localhost): 2 x 32-bit FNV-1a.
function fnv(text) {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ text.length;
  for (let i = 0; i < text.length; i += 1) {
    a = Math.imul(a ^ text.charCodeAt(i), 16777619) >>> 0;
    b = Math.imul(b ^ text.charCodeAt(text.length - 1 - i), 16777619) >>> 0;
  }
  return a.toString(16).padStart(8, "0") + b.toString(16).padStart(8, "0");
}

export async function fingerprint(path, file) {
  const text = `${path}\n${file.size}\n${file.lastModified}`;
  if (window.crypto && window.crypto.subtle) {
    const digest = await window.crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
    return hex(digest).slice(0, 32);
  }
  return fnv(text);
}

export class Memory {
  constructor(caseId) {
    this.key = PREFIX + caseId;
    this.state = this.load();
  }

  load() {
    try {
      const saved = JSON.parse(window.localStorage.getItem(this.key) || "null");
      if (saved && typeof saved.uploadId === "string" && saved.files) return saved;
    } catch (error) {
      // unreadable or blocked storage: start afresh
    }
    return { uploadId: null, files: {} };
  }

  save() {
    try {
      window.localStorage.setItem(this.key, JSON.stringify(this.state));
    } catch (error) {
      // storage full or blocked: resuming after a reload will re-send instead
    }
  }

  get uploadId() {
    return this.state.uploadId;
  }

  setUpload(uploadId) {
    this.state = { uploadId, files: {} };
    this.save();
  }

  url(print) {
    return this.state.files[print] || null;
  }

  remember(print, url) {
    this.state.files[print] = url;
    this.save();
  }

  clear() {
    this.state = { uploadId: null, files: {} };
    try {
      window.localStorage.removeItem(this.key);
    } catch (error) {
      // nothing to clear
    }
  }
}
