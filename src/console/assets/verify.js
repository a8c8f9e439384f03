// chartbridge proof bundle verifier, run in the page (docs/console.md).
// The same steps, in the same order and under the same names as
// `chartbridge verify` and deploy/tools/verify_bundle.py
// (docs/verification.md). Every hash, HMAC and signature is computed by
// WebCrypto (crypto.subtle); this file only parses and compares.
"use strict";
(function () {
  const BUNDLE_V1 = "chartbridge-proof-bundle/v1";
  const BUNDLE_V2 = "chartbridge-proof-bundle/v2";
  const LEAF_V1 = "chartbridge-leaf/v1";
  const LEAF_V2 = "chartbridge-leaf/v2";
  const HEX64 = /^[0-9a-f]{64}$/;
  const DECIMAL = /^(0|[1-9][0-9]*)$/;
  const TRANSFORMATION = /^[a-z-]{1,64}$/;
  const TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z$/;
  const U64_MAX = (1n << 64n) - 1n;
  const I64_MAX = (1n << 63n) - 1n;
  const MAX_PATH = 64;
  const MAX_SIGNATURES = 100;
  const EM_DASH = "\u2014";
  const enc = new TextEncoder();

  class Failed extends Error {
    constructor(step, reason) {
      super(step + ": " + reason);
      this.step = step;
      this.reason = reason;
    }
  }

  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const fromHex = (text) => Uint8Array.from(text.match(/../g) || [], (h) => parseInt(h, 16));
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const sha256 = async (data) => new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  const hmacSha256 = async (key, data) => {
    const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return new Uint8Array(await crypto.subtle.sign("HMAC", k, data));
  };
  const leafHash = (data) => sha256(concat(Uint8Array.of(0), data));
  const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));
  const keyId = async (name, pub) => (await sha256(concat(enc.encode(name + "\n"), Uint8Array.of(1), pub))).slice(0, 4);

  // Standard padded base64 that re-encodes to the same text.
  function b64(text, what, step) {
    if (typeof text !== "string") throw new Failed(step, what + " is not a string");
    let bin;
    try { bin = atob(text); } catch (e) { throw new Failed(step, what + " is not base64"); }
    if (btoa(bin) !== text) throw new Failed(step, what + " is not canonical base64");
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }

  const isU64 = (v) => Number.isSafeInteger(v) && v >= 0;
  const isInt = (v) => Number.isSafeInteger(v);
  const hasControl = (s) => Array.from(s).some((c) => { const o = c.codePointAt(0); return o < 0x20 || (o >= 0x7f && o <= 0x9f); });
  const validField = (v) => { const n = enc.encode(v).length; return n > 0 && n <= 1024 && v.trim() === v && !hasControl(v); };

  function checkArchived(archived) {
    const m = TIME.exec(archived);
    const ok = m && Number(m[1]) >= 1970 && (() => {
      const ms = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6], +m[7]);
      return new Date(ms).toISOString() === archived;
    })();
    if (!ok) throw new Failed("LeafData", "archived is not YYYY-MM-DDTHH:MM:SS.mmmZ");
  }

  function checkResource(resource) {
    const at = resource.indexOf("/");
    const typ = at < 0 ? resource : resource.slice(0, at);
    const rid = at < 0 ? "" : resource.slice(at + 1);
    if (!validField(resource) || !typ || !rid || /\s/.test(resource)) throw new Failed("LeafData", "resource must be Type/id");
  }

  function leafLines(text, count, prefixes) {
    const lines = text.split("\n");
    if (lines.length !== count + 1 || lines[count] !== "") throw new Failed("LeafData", "leaf record must be exactly " + count + " newline-terminated lines");
    return prefixes.map((prefix, i) => {
      const line = lines[i + 1];
      if (!line.startsWith(prefix)) throw new Failed("LeafData", "expected a '" + prefix.trim() + "' line");
      return line.slice(prefix.length);
    });
  }

  function sameFields(a, b) {
    if (!a || typeof a !== "object" || Array.isArray(a)) return false;
    const ka = Object.keys(a).sort(), kb = Object.keys(b).sort();
    return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
  }

  // Step LeafData: decode the canonical leaf record and compare fields.
  function checkLeaf(bundle) {
    const raw = b64(bundle.leaf_data, "leaf_data", "LeafData");
    let text;
    try { text = new TextDecoder("utf-8", { fatal: true }).decode(raw); } catch (e) { throw new Failed("LeafData", "leaf_data is not UTF-8"); }
    const first = text.split("\n", 1)[0];
    let summary, salt = null;
    if (first === LEAF_V2) {
      const [token, content, received, transformation, resource, archived] = leafLines(text, 7,
        ["message-token ", "content-hmac ", "received-hmac ", "transformation ", "resource ", "archived "]);
      if (![token, content, received].every((v) => HEX64.test(v))) throw new Failed("LeafData", "message-token, content-hmac and received-hmac must be 64 lowercase hex digits");
      if (!TRANSFORMATION.test(transformation)) throw new Failed("LeafData", "transformation must be one word of a-z and -");
      checkResource(resource);
      checkArchived(archived);
      summary = { message_token: token, content_hmac: content, received_hmac: received, transformation, resource, archived };
      if (bundle.format !== BUNDLE_V2 || typeof bundle.content_salt !== "string" || !HEX64.test(bundle.content_salt)) throw new Failed("LeafData", "a v2 leaf needs format /v2 and a content_salt of 64 lowercase hex digits");
      salt = fromHex(bundle.content_salt);
    } else if (first === LEAF_V1) {
      const [content, message, resource, archived] = leafLines(text, 5, ["content-sha256 ", "message ", "resource ", "archived "]);
      if (!HEX64.test(content)) throw new Failed("LeafData", "content-sha256 is not 64 lowercase hex digits");
      const at = message.indexOf(":");
      if (!validField(message) || at <= 0 || at === message.length - 1) throw new Failed("LeafData", "message must be source:id");
      checkResource(resource);
      checkArchived(archived);
      if (bundle.format !== BUNDLE_V1 || "content_salt" in bundle) throw new Failed("LeafData", "a v1 leaf needs format /v1 and no content_salt");
      summary = { content_sha256: content, message, resource, archived };
    } else {
      throw new Failed("LeafData", "unknown leaf format line");
    }
    if (!sameFields(bundle.leaf, summary)) throw new Failed("LeafData", "the 'leaf' fields disagree with leaf_data");
    return { raw, summary, salt };
  }

  // Step ContentHash: SHA-256 (v1), or HMAC-SHA256(salt, SHA-256) (v2).
  async function checkContent(summary, salt, content) {
    const digest = hex(await sha256(content));
    if (salt === null) {
      if (digest !== summary.content_sha256) throw new Failed("ContentHash", "content SHA-256 " + digest + " differs from the leaf's " + summary.content_sha256);
      return "SHA-256 " + digest;
    }
    const keyed = hex(await hmacSha256(salt, fromHex(digest)));
    const what = "HMAC-SHA256(content_salt, SHA-256 " + digest + ")";
    if (keyed === summary.content_hmac) return what + " equals content-hmac: the archived content";
    if (keyed === summary.received_hmac) return what + " equals received-hmac: the content as received, before " + summary.transformation;
    throw new Failed("ContentHash", what + " is neither content-hmac nor received-hmac");
  }

  // Split a C2SP signed note into text and (name, key id, signature) lines.
  function splitNote(note) {
    if (typeof note !== "string" || Array.from(note).some((c) => c.codePointAt(0) < 0x20 && c !== "\n")) throw new Failed("Checkpoint", "note is not text or has control characters");
    const at = note.lastIndexOf("\n\n");
    if (at < 0) throw new Failed("Checkpoint", "no blank line before the signatures");
    const text = note.slice(0, at + 1), block = note.slice(at + 2);
    if (!block.endsWith("\n")) throw new Failed("Checkpoint", "signature block must end with a newline");
    const sigs = [];
    for (const line of block.slice(0, -1).split("\n")) {
      if (sigs.length >= MAX_SIGNATURES) throw new Failed("Checkpoint", "too many signatures");
      if (!line.startsWith(EM_DASH + " ")) throw new Failed("Checkpoint", "signature line must start with an em dash and a space");
      const rest = line.slice(2), sp = rest.indexOf(" ");
      const name = sp < 0 ? rest : rest.slice(0, sp);
      const raw = b64(sp < 0 ? "" : rest.slice(sp + 1), "signature", "Checkpoint");
      if (!name || name.includes("+") || /\s/.test(name) || raw.length < 5) throw new Failed("Checkpoint", "bad signature line");
      sigs.push({ name, kid: raw.slice(0, 4), sig: raw.slice(4) });
    }
    return { text, sigs };
  }

  // Parse the checkpoint body; require the timestamp extension line.
  function parseCheckpoint(text) {
    if (!text.endsWith("\n")) throw new Failed("Checkpoint", "body must end with a newline");
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3 || lines.some((l) => !l)) throw new Failed("Checkpoint", "need at least three non-empty lines");
    const [origin, size, rootText] = lines;
    if (!DECIMAL.test(size) || BigInt(size) > U64_MAX) throw new Failed("Checkpoint", "bad tree size");
    const root = b64(rootText, "root hash", "Checkpoint");
    if (root.length !== 32) throw new Failed("Checkpoint", "root hash is not 32 bytes");
    const ext = lines.slice(3);
    if (!ext.length || !ext[0].startsWith("timestamp ")) throw new Failed("Checkpoint", "no 'timestamp' line");
    const ts = ext[0].slice("timestamp ".length);
    if (!DECIMAL.test(ts) || BigInt(ts) > I64_MAX) throw new Failed("Checkpoint", "bad timestamp");
    if (ext.slice(1).some((l) => l.startsWith("timestamp "))) throw new Failed("Checkpoint", "repeated timestamp");
    return { origin, size: BigInt(size), root, timestampMs: BigInt(ts) };
  }

  // RFC 9162 section 2.1.3.2; `trail` receives each node computed.
  async function rootFromInclusion(leaf, index, size, path, trail) {
    if (index >= size) throw new Failed("Inclusion", "leaf index " + index + " is outside tree size " + size);
    let fn = index, sn = size - 1n, r = leaf;
    for (const p of path) {
      if (sn === 0n) throw new Failed("Inclusion", "inclusion path is too long");
      if ((fn & 1n) === 1n || fn === sn) {
        r = await nodeHash(p, r);
        trail.push("SHA-256(0x01 || " + hex(p).slice(0, 12) + "… || node) = " + hex(r));
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        r = await nodeHash(r, p);
        trail.push("SHA-256(0x01 || node || " + hex(p).slice(0, 12) + "…) = " + hex(r));
      }
      fn >>= 1n; sn >>= 1n;
    }
    if (sn !== 0n) throw new Failed("Inclusion", "inclusion path is too short");
    return r;
  }

  // Parse `<name>+<hex key id>+<base64(0x01 || key)>`; check the key id.
  async function parseVkey(vkey) {
    const a = vkey.indexOf("+"), name = a < 0 ? vkey : vkey.slice(0, a);
    const rest = a < 0 ? "" : vkey.slice(a + 1), b = rest.indexOf("+");
    const hex8 = b < 0 ? rest : rest.slice(0, b), text = b < 0 ? "" : rest.slice(b + 1);
    if (!name || /\s/.test(name) || !/^[0-9a-fA-F]{8}$/.test(hex8)) throw new Error("malformed verifier key " + vkey);
    let raw;
    try { raw = Uint8Array.from(atob(text), (c) => c.charCodeAt(0)); } catch (e) { throw new Error("malformed verifier key " + vkey); }
    if (raw.length !== 33 || raw[0] !== 1) throw new Error("not an Ed25519 verifier key: " + vkey);
    if (hex(await keyId(name, raw.slice(1))) !== hex8.toLowerCase()) throw new Error("key id " + hex8 + " does not match the key in " + vkey);
    return { name, keyId: hex8.toLowerCase(), publicKey: raw.slice(1) };
  }

  // Key entries (bundle or operator key list) with parsed public keys.
  async function keyEntries(entries, where) {
    if (!Array.isArray(entries)) throw new Failed("Signature", where + " keys are not a list");
    const keys = [];
    for (const e of entries) {
      let parsed;
      try {
        parsed = await parseVkey(e.verifier_key);
      } catch (err) {
        throw new Failed("Signature", "unusable key entry in " + where + ": " + err.message);
      }
      const until = e.valid_until_ms ?? null, revoked = e.revoked_at_ms ?? null;
      const times = [e.valid_from_ms, until, revoked].filter((t) => t !== null);
      if (!times.every(isInt) || e.valid_from_ms === undefined) throw new Failed("Signature", "unusable key entry in " + where + ": bad times");
      if (parsed.name !== e.name || parsed.keyId !== e.key_id) throw new Failed("Signature", "key entry '" + e.name + "' in " + where + ": name or key_id differ from verifier_key");
      keys.push(Object.assign(parsed, { validFrom: BigInt(e.valid_from_ms), validUntil: until === null ? null : BigInt(until), revokedAt: revoked === null ? null : BigInt(revoked) }));
    }
    return keys;
  }

  // Trusted keys typed or dropped by the user: verifier key lines or a JSON key list.
  async function trustedKeys(text) {
    const t = text.trim();
    if (!t) return null;
    if (t.startsWith("[")) return keyEntries(JSON.parse(t), "the key list");
    const keys = [];
    for (const line of t.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"))) {
      keys.push(Object.assign(await parseVkey(line), { validFrom: -(1n << 63n), validUntil: null, revokedAt: null }));
    }
    return keys;
  }

  // Steps Signature, KeyRevoked, KeyNotValid.
  async function checkSignatures(text, sigs, keys, signedAt) {
    const verified = [], seen = new Set(), data = enc.encode(text);
    for (const s of sigs) {
      const matches = keys.filter((k) => k.name === s.name && k.keyId === hex(s.kid));
      if (!matches.length) continue;
      if (matches.length > 1) throw new Failed("Signature", "ambiguous key " + s.name + "+" + hex(s.kid));
      const tag = s.name + "+" + hex(s.kid);
      if (seen.has(tag)) continue;
      seen.add(tag);
      let ok = false;
      try {
        const key = await crypto.subtle.importKey("raw", matches[0].publicKey, { name: "Ed25519" }, false, ["verify"]);
        ok = await crypto.subtle.verify({ name: "Ed25519" }, key, s.sig, data);
      } catch (e) {
        if (e && e.name === "NotSupportedError") throw new Failed("Signature", "this browser's WebCrypto has no Ed25519");
        ok = false;
      }
      if (!ok) throw new Failed("Signature", "invalid signature by key " + tag);
      verified.push(matches[0]);
    }
    if (!verified.length) throw new Failed("Signature", "no signature by a trusted key");
    const good = [], rejected = [];
    for (const k of verified) {
      if (k.revokedAt !== null && k.revokedAt <= signedAt) rejected.push(["KeyRevoked", k]);
      else if (signedAt < k.validFrom || (k.validUntil !== null && signedAt >= k.validUntil)) rejected.push(["KeyNotValid", k]);
      else good.push(k);
    }
    if (!good.length) {
      const [step, k] = rejected.find((r) => r[0] === "KeyRevoked") || rejected[0];
      throw new Failed(step, "key " + k.name + "+" + k.keyId + " does not vouch for a checkpoint signed at " + signedAt + " ms");
    }
    return good;
  }

  // Runs every step in order; `report(step, detail)` for each passed one.
  async function verify(bundle, content, trusted, report) {
    if (!bundle || typeof bundle !== "object" || Array.isArray(bundle) || (bundle.format !== BUNDLE_V1 && bundle.format !== BUNDLE_V2)) throw new Failed("Format", "not a " + BUNDLE_V1 + " or " + BUNDLE_V2 + " bundle");
    report("Format", bundle.format);
    const leaf = checkLeaf(bundle);
    const who = leaf.summary.message || "message token " + leaf.summary.message_token;
    report("LeafData", "canonical leaf record for " + who + " -> " + leaf.summary.resource + ", archived " + leaf.summary.archived);
    if (content !== null) report("ContentHash", await checkContent(leaf.summary, leaf.salt, content));
    const note = splitNote(bundle.checkpoint);
    const cp = parseCheckpoint(note.text);
    report("Checkpoint", "origin " + cp.origin + ", size " + cp.size + ", signed at " + cp.timestampMs + " ms (" + new Date(Number(cp.timestampMs)).toISOString() + ")");
    const index = bundle.leaf_index, size = bundle.tree_size, path = bundle.inclusion_path;
    if (!isU64(index) || !isU64(size)) throw new Failed("Inclusion", "leaf_index and tree_size must be unsigned integers");
    if (BigInt(size) !== cp.size) throw new Failed("Inclusion", "tree_size " + size + " differs from the checkpoint size " + cp.size);
    if (!Array.isArray(path) || path.length > MAX_PATH) throw new Failed("Inclusion", "inclusion_path must be a list of at most 64 hashes");
    const hashes = path.map((p, i) => b64(p, "inclusion_path[" + i + "]", "Inclusion"));
    if (hashes.some((h) => h.length !== 32)) throw new Failed("Inclusion", "every inclusion path element must be 32 bytes");
    const lh = await leafHash(leaf.raw);
    const trail = ["leaf hash SHA-256(0x00 || leaf_data) = " + hex(lh)];
    const root = await rootFromInclusion(lh, BigInt(index), BigInt(size), hashes, trail);
    if (!equal(root, cp.root)) throw new Failed("Inclusion", "path leads to " + hex(root) + ", checkpoint root is " + hex(cp.root));
    report("Inclusion", "leaf " + index + " of " + size + " leads to root " + hex(root), trail);
    const keys = trusted !== null ? trusted : await keyEntries(bundle.keys, "the bundle");
    const good = await checkSignatures(note.text, note.sigs, keys, cp.timestampMs);
    report("Signature", "Ed25519 signature by " + good.map((k) => k.name + "+" + k.keyId).join(", ") + (trusted === null ? " (the bundle's own keys: compare the key id with the operator's published key)" : " (a key you gave)"));
    report("KeyRevoked", "not revoked at " + cp.timestampMs + " ms");
    report("KeyNotValid", "valid at " + cp.timestampMs + " ms");
  }


  // RFC 9162 section 2.1.4.2: does `proof` show the tree of size `first`
  // (root `r1`) is a prefix of the tree of size `second` (root `r2`)?
  async function checkConsistency(first, second, r1, r2, proof) {
    const step = "Consistency";
    if (first > second) throw new Failed(step, "the first tree (" + first + ") is larger than the second (" + second + ")");
    if (first === 0n || first === second) {
      if (proof.length) throw new Failed(step, "the proof must be empty for these sizes");
      if (first === second && !equal(r1, r2)) throw new Failed(step, "equal sizes with different roots");
      return "trivially consistent (size " + first + " to " + second + ")";
    }
    if (!proof.length) throw new Failed(step, "the proof is empty");
    const pow2 = (first & (first - 1n)) === 0n;
    const start = pow2 ? r1 : proof[0];
    const rest = pow2 ? proof : proof.slice(1);
    let fn = first - 1n, sn = second - 1n;
    while ((fn & 1n) === 1n) { fn >>= 1n; sn >>= 1n; }
    let fr = start, sr = start;
    for (const c of rest) {
      if (sn === 0n) throw new Failed(step, "the proof is too long");
      if ((fn & 1n) === 1n || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        if ((fn & 1n) === 0n) while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        sr = await nodeHash(sr, c);
      }
      fn >>= 1n; sn >>= 1n;
    }
    if (sn !== 0n) throw new Failed(step, "the proof is too short");
    if (!equal(fr, r1)) throw new Failed(step, "the proof leads to another first root " + hex(fr));
    if (!equal(sr, r2)) throw new Failed(step, "the proof leads to another second root " + hex(sr));
    return "the tree of size " + first + " (root " + hex(r1) + ") is a prefix of the tree of size " + second + " (root " + hex(r2) + ")";
  }

  // A consistency proof as `chartbridge log consistency` prints it, with
  // the signed checkpoints of both sizes where present.
  async function verifyConsistency(doc, trusted, report) {
    const step = "Consistency";
    if (!doc || typeof doc !== "object" || !isU64(doc.first) || !isU64(doc.second) || !Array.isArray(doc.proof) || doc.proof.length > MAX_PATH) throw new Failed(step, "not a consistency proof (first, second, first_root, second_root, proof)");
    const r1 = b64(doc.first_root, "first_root", step), r2 = b64(doc.second_root, "second_root", step);
    const proof = doc.proof.map((p, i) => b64(p, "proof[" + i + "]", step));
    if (r1.length !== 32 || r2.length !== 32 || proof.some((h) => h.length !== 32)) throw new Failed(step, "every hash must be 32 bytes");
    const first = BigInt(doc.first), second = BigInt(doc.second);
    for (const [which, size, root] of [["first", first, r1], ["second", second, r2]]) {
      const note = doc[which + "_checkpoint"];
      if (note === null || note === undefined) continue;
      const n = splitNote(note);
      const cp = parseCheckpoint(n.text);
      if (cp.size !== size || !equal(cp.root, root)) throw new Failed(step, "the " + which + " checkpoint signs size " + cp.size + " root " + hex(cp.root) + ", not the proof's");
      if (trusted === null) throw new Failed("Signature", "checking a signed checkpoint needs trusted keys");
      const good = await checkSignatures(n.text, n.sigs, trusted, cp.timestampMs);
      report("Checkpoint", "the " + which + " checkpoint (size " + cp.size + ", signed at " + cp.timestampMs + " ms) is signed by " + good.map((k) => k.name + "+" + k.keyId).join(", "));
    }
    report(step, await checkConsistency(first, second, r1, r2, proof));
  }

  // ---- the page ----
  const $ = (id) => document.getElementById(id);
  const readFile = (input) => input.files && input.files[0] ? input.files[0].arrayBuffer().then((b) => new Uint8Array(b)) : Promise.resolve(null);

  function row(list, state, step, detail, trail) {
    const li = document.createElement("li");
    li.className = state;
    li.dataset.step = step;
    li.dataset.state = state;
    const head = document.createElement("strong");
    head.textContent = (state === "pass" ? "PASS " : "FAIL ") + step;
    const body = document.createElement("span");
    body.textContent = ": " + detail;
    li.append(head, body);
    if (trail && trail.length) {
      const ol = document.createElement("ol");
      ol.className = "trail";
      for (const t of trail) { const x = document.createElement("li"); x.textContent = t; ol.append(x); }
      li.append(ol);
    }
    list.append(li);
  }

  // A bundle fetched by KIS resource through the console (not offline).
  let fetched = null;

  async function fetchBundle() {
    const status = $("fetched");
    fetched = null;
    status.dataset.state = "running";
    status.textContent = "Fetching…";
    try {
      const resource = $("resource").value.trim();
      const r = await fetch("/console/verify/bundle?resource=" + encodeURIComponent(resource), { credentials: "same-origin", headers: { Accept: "application/json" } });
      const body = new Uint8Array(await r.arrayBuffer());
      if (!r.ok) throw new Error(r.status === 401 ? "log in first (as a user with the compliance role)" : r.status === 403 ? "your roles do not include compliance" : new TextDecoder().decode(body).slice(0, 200) || "the console answered " + r.status);
      const b = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
      fetched = body;
      status.textContent = "Bundle of " + resource + " fetched (leaf " + b.leaf_index + " of tree size " + b.tree_size + "); press Verify.";
      status.dataset.state = "done";
    } catch (e) {
      status.textContent = "No bundle: " + (e && e.message ? e.message : String(e));
      status.dataset.state = "failed";
    }
  }

  // Runs `work` (which reports each passed step and may return a note for
  // the verdict) and shows its result: every step, the first failure.
  async function settle(work) {
    const out = $("result"), list = $("steps"), verdict = $("verdict");
    out.dataset.state = "running";
    list.replaceChildren();
    verdict.textContent = "Verifying…";
    delete out.dataset.failedStep;
    try {
      const report = (step, detail, trail) => row(list, "pass", step, detail, trail);
      const note = await work(report);
      out.dataset.verified = "true";
      verdict.textContent = "VERIFIED" + (note || "");
    } catch (e) {
      const step = e instanceof Failed ? e.step : "Format";
      row(list, "fail", step, e instanceof Failed ? e.reason : String(e));
      out.dataset.verified = "false";
      out.dataset.failedStep = step;
      verdict.textContent = "FAILED at step " + step;
    }
    out.dataset.state = "done";
    verdict.focus();
  }

  async function userKeys() {
    try { return await trustedKeys($("keys").value); } catch (e) { throw new Failed("Signature", "unusable trusted key: " + e.message); }
  }

  // The verifier page: the chosen (or fetched) bundle, content, consistency proof.
  function run() {
    return settle(async (report) => {
      const bundleBytes = (await readFile($("bundle"))) ?? fetched;
      const consistencyBytes = await readFile($("consistency"));
      if (bundleBytes === null && consistencyBytes === null) throw new Failed("Format", "choose a bundle file");
      const json = (bytes, what) => {
        try { return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)); } catch (e) { throw new Failed(what, "the file is not JSON"); }
      };
      const content = await readFile($("content"));
      const trusted = await userKeys();
      if (bundleBytes !== null) await verify(json(bundleBytes, "Format"), content, trusted, report);
      if (consistencyBytes !== null) await verifyConsistency(json(consistencyBytes, "Consistency"), trusted, report);
      return bundleBytes !== null && content === null ? " (content not checked: no content file chosen)" : "";
    });
  }

  // The log page: the consistency proof between two chosen checkpoints,
  // fetched from the console (`chartbridge log consistency`), checked here.
  function runConsistency() {
    return settle(async (report) => {
      const trusted = await userKeys();
      const from = $("from").value, to = $("to").value;
      const r = await fetch("/console/log/consistency?from=" + encodeURIComponent(from) + "&to=" + encodeURIComponent(to), { credentials: "same-origin", headers: { Accept: "application/json" } });
      const text = await r.text();
      if (!r.ok) throw new Failed("Consistency", "the console answered " + r.status + ": " + text.slice(0, 200));
      let doc;
      try { doc = JSON.parse(text); } catch (e) { throw new Failed("Consistency", "the console's answer is not JSON"); }
      await verifyConsistency(doc, trusted, report);
      return " (tree size " + doc.first + " to " + doc.second + ")";
    });
  }

  if (typeof document !== "undefined") {
    document.addEventListener("DOMContentLoaded", () => {
      const check = $("consistency-form");
      if (check) check.addEventListener("submit", (ev) => { ev.preventDefault(); runConsistency(); });
      const form = $("verify-form");
      if (!form) return;
      form.addEventListener("submit", (ev) => { ev.preventDefault(); run(); });
      $("fetch-bundle").addEventListener("click", fetchBundle);
      $("bundle").addEventListener("change", () => { fetched = null; $("fetched").textContent = ""; });
      const drop = $("drop");
      drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
      drop.addEventListener("dragleave", () => drop.classList.remove("over"));
      drop.addEventListener("drop", (ev) => {
        ev.preventDefault();
        drop.classList.remove("over");
        const files = Array.from(ev.dataTransfer.files);
        const json = files.find((f) => f.name.endsWith(".json"));
        const other = files.find((f) => f !== json);
        const set = (input, f) => { const dt = new DataTransfer(); dt.items.add(f); input.files = dt.files; };
        if (json) set($("bundle"), json);
        if (other) set($("content"), other);
      });
    });
  }
})();
