// A small tus 1.0 client (core, creation, creation-with-upload): one file per
// TusUpload. Small files go in the creation request itself; larger ones are
// created empty (so their address is known and remembered before any byte is
// sent) and then sent in PATCH chunks. Network drops and server unavailability
// are retried with a growing delay; after a drop the offset is asked again
// (HEAD) so sending resumes exactly where the server stopped receiving.
"use strict";

const TUS_VERSION = "1.0.0";
const RETRY_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 15000, 30000];
const RETRY_FOREVER_AFTER = RETRY_DELAYS_MS.length; // keep trying at the longest delay
const MAX_OFFSET_RESYNCS = 5;

// A failure reported by the server (4xx with its reason) or the network.
export class TusError extends Error {
  constructor(message, { status = 0, error = "", retryable = false } = {}) {
    super(message);
    this.status = status;
    this.error = error;
    this.retryable = retryable;
  }
}

function retryableStatus(status) {
  return status === 0 || status === 408 || status === 423 || status === 429 || status === 502 ||
    status === 503 || status === 504;
}

// One HTTP request through XMLHttpRequest (the only standard API that reports
// upload progress). Resolves with {status, header(name), json()}; rejects with
// a retryable TusError when the network fails. With stallMs, a request whose
// body has not moved for that long is abandoned as a failure too: a connection
// that died silently (a Wi-Fi hand-over, a sleeping laptop) may report nothing
// for many minutes in some browsers. Once every byte is sent the watch ends:
// the server may then take its time (a large ZIP is checked before it answers).
export function send(method, url, { headers = {}, body = null, onProgress = null, stallMs = 0 } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    let stalled = false;
    let timer = null;
    const unwatch = () => clearTimeout(timer);
    const watch = () => {
      unwatch();
      timer = setTimeout(() => { stalled = true; xhr.abort(); }, stallMs);
    };
    xhr.open(method, url, true);
    xhr.setRequestHeader("Tus-Resumable", TUS_VERSION);
    for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
    const watching = body !== null && stallMs > 0;
    if (watching || onProgress) {
      xhr.upload.onprogress = (event) => {
        if (watching) watch();
        if (onProgress) onProgress(event.loaded);
      };
    }
    if (watching) xhr.upload.onload = unwatch;
    xhr.onload = () => {
      unwatch();
      resolve({
        status: xhr.status,
        header: (name) => xhr.getResponseHeader(name),
        json: () => { try { return JSON.parse(xhr.responseText || "null"); } catch (e) { return null; } },
      });
    };
    const failed = () => {
      unwatch();
      const message = stalled ? "the connection stalled" : "the connection to the server was lost";
      reject(new TusError(message, { retryable: true }));
    };
    xhr.onerror = failed;
    xhr.ontimeout = failed;
    xhr.onabort = failed;
    xhr.send(body);
    if (watching) watch();
  });
}

// Whether the browser can still read the file at offset: a disc taken out or
// a file deleted since it was picked fails here. Its requests fail as if the
// network had dropped, and would otherwise be retried for ever.
async function readable(file, offset) {
  if (!file.size) return true;
  const at = Math.min(offset, file.size - 1);
  try {
    await file.slice(at, at + 1).arrayBuffer();
    return true;
  } catch (error) {
    return false;
  }
}

// The error a non-success response stands for, in the server's own plain words.
export function errorOf(response, fallback) {
  const body = response.json() || {};
  const retryable = retryableStatus(response.status);
  const message = body.detail || (retryable ? "the server is not available" : fallback);
  return new TusError(message, { status: response.status, error: body.error || "", retryable });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function metadata(pairs) {
  return Object.entries(pairs).map(([key, value]) => `${key} ${btoa(value)}`).join(",");
}

export class TusUpload {
  // file: a File; options: {endpoint, url, kind, chunkSize, stallMs, csrf,
  // onUrl(url), onResume(offset), onProgress(offset), onRetry(delayMs | null)}.
  // The file name is never sent.
  constructor(file, options) {
    this.file = file;
    this.options = options;
    this.url = options.url || null;
    this.offset = 0;
    this.requests = 0;
  }

  headers(extra) {
    return Object.assign({ "X-CSRF-Token": this.options.csrf }, extra);
  }

  // Send what the server does not have yet. Resolves with {outcome, offset,
  // skipped} where skipped means the server already had every byte.
  async start() {
    if (this.url) {
      const known = await this.retrying(() => this.head());
      if (known === null) {
        this.url = null;
      } else {
        this.offset = Math.min(known.offset, this.file.size);
        if (this.options.onResume) this.options.onResume(this.offset);
        if (known.offset >= this.file.size) return { outcome: known.outcome, offset: known.offset, skipped: true };
      }
    }
    if (!this.url) {
      const created = await this.retrying(() => this.create());
      if (created) return created;
    }
    return this.sendRest();
  }

  report(extra = 0) {
    if (this.options.onProgress) this.options.onProgress(Math.min(this.offset + extra, this.file.size));
  }

  // {offset, outcome} the server has for this.url (outcome once finished),
  // or null if it no longer knows the file.
  async head() {
    this.requests += 1;
    const response = await send("HEAD", this.url, { headers: this.headers({}) });
    if (response.status === 404 || response.status === 410) return null;
    if (response.status !== 200) throw errorOf(response, "the upload could not be resumed");
    return { offset: Number(response.header("Upload-Offset")), outcome: response.header("X-Vault-Outcome") };
  }

  // Create the file on the server. Small files are sent in the same request
  // (the final outcome is returned); larger ones are only announced.
  async create() {
    const small = this.file.size <= this.options.chunkSize;
    const headers = this.headers({
      "Upload-Length": String(this.file.size),
      "Upload-Metadata": metadata({ kind: this.options.kind }),
    });
    if (small) headers["Content-Type"] = "application/offset+octet-stream";
    this.requests += 1;
    const response = await send("POST", this.options.endpoint, {
      headers,
      body: small ? this.file : null,
      onProgress: small ? (loaded) => this.report(loaded) : null,
      stallMs: this.options.stallMs,
    });
    const location = response.header("Location");
    if (location) {
      // remembered even for a refused file, so that after a reload it is not sent again
      this.url = new URL(location, window.location.href).pathname;
      if (this.options.onUrl) this.options.onUrl(this.url);
    }
    if (response.status >= 400) throw errorOf(response, "the file was not accepted");
    if ((response.status !== 201 && response.status !== 200) || !location) {
      throw errorOf(response, "the server did not create the file");
    }
    this.offset = Number(response.header("Upload-Offset") || 0);
    this.report();
    if (small && this.offset >= this.file.size) {
      return { outcome: response.header("X-Vault-Outcome"), offset: this.offset, skipped: false };
    }
    return null;
  }

  async sendRest() {
    let resyncs = 0;
    let outcome = null;
    while (this.offset < this.file.size) {
      try {
        outcome = await this.retrying(() => this.patch(), true);
      } catch (error) {
        if (error.status !== 409 || error.error !== "offset-mismatch" || resyncs >= MAX_OFFSET_RESYNCS) throw error;
        resyncs += 1;
        const known = await this.retrying(() => this.head());
        if (known === null) throw new TusError("the server lost this file; select it again", { status: 404 });
        this.offset = known.offset;
      }
      if (this.offset >= this.file.size) break;
    }
    return { outcome, offset: this.offset, skipped: false };
  }

  async patch() {
    const end = Math.min(this.offset + this.options.chunkSize, this.file.size);
    this.requests += 1;
    const response = await send("PATCH", this.url, {
      headers: this.headers({
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": String(this.offset),
      }),
      body: this.file.slice(this.offset, end),
      onProgress: (loaded) => this.report(loaded),
      stallMs: this.options.stallMs,
    });
    if (response.status !== 204 && response.status !== 200) {
      throw errorOf(response, "the file was not accepted");
    }
    this.offset = Number(response.header("Upload-Offset"));
    this.report();
    return response.header("X-Vault-Outcome");
  }

  // Run step(), retrying network failures and unavailability with backoff.
  // With resync, ask the server's offset again before retrying (a PATCH may
  // have been partly received). A file the browser can no longer read is not
  // retried: that is no network drop.
  async retrying(step, resync = false) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        const result = await step();
        if (attempt > 0 && this.options.onRetry) this.options.onRetry(null);
        return result;
      } catch (error) {
        if (!(error instanceof TusError) || !error.retryable) throw error;
        if (!(await readable(this.file, this.offset))) {
          throw new TusError(
            "this file can no longer be read from your computer (was the disc or drive removed?): " +
              "select it again to send it",
            { error: "unreadable" },
          );
        }
        const delay = RETRY_DELAYS_MS[Math.min(attempt, RETRY_FOREVER_AFTER - 1)];
        if (this.options.onRetry) this.options.onRetry(delay);
        await sleep(delay);
        if (resync) await this.resync();
      }
    }
  }

  async resync() {
    try {
      const known = await this.head();
      if (known !== null) this.offset = known.offset;
    } catch (error) {
      // still unreachable: the next attempt will wait and try again
    }
  }
}
