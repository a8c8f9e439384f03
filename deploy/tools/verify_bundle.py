#!/usr/bin/env python3
"""Verify a chartbridge proof bundle without chartbridge.

Independent re-implementation of `chartbridge-proof-bundle/v1` and `/v2`
verification (docs/verification.md), using the Python 3 standard library plus one Ed25519
implementation, the `cryptography` package from PyPI:

    python3 -m pip install cryptography

Usage:

    verify_bundle.py BUNDLE.json [--content FILE] [--key VKEY | --key FILE]...
                     [--keys KEYS.json]

  --content FILE   the archived content bytes (e.g. the FHIR attachment,
                   base64-decoded); without it the content hash is not checked.
                   For a v2 bundle the received original (before metadata
                   removal or redaction) verifies too, and is reported as such
  --key VKEY       a trusted verifier key `<name>+<key id>+<base64>` from the
                   log operator, or a file holding such keys one per line;
                   trusted without time limits
  --keys FILE      a JSON array of key entries (as in the bundle's "keys")
                   published by the operator, with validity and revocation

Without --key and --keys the bundle's own keys are used, which only shows the
bundle is self-consistent: compare the key id with the operator's published
key. Exit status: 0 verified, 1 verification failed, 2 usage error.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import re
import sys
from datetime import datetime, timezone

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError:
    sys.exit("verify_bundle.py needs the 'cryptography' package: python3 -m pip install cryptography")

BUNDLE_FORMAT = "chartbridge-proof-bundle/v1"
BUNDLE_FORMAT_V2 = "chartbridge-proof-bundle/v2"
LEAF_FORMAT = "chartbridge-leaf/v1"
LEAF_FORMAT_V2 = "chartbridge-leaf/v2"
TRANSFORMATION_RE = re.compile(r"^[a-z-]{1,64}$")
EM_DASH = "\u2014"
TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
DECIMAL_RE = re.compile(r"^(0|[1-9][0-9]*)$")
MAX_PATH = 64
MAX_SIGNATURES = 100
U64_MAX = 2**64 - 1


class Failed(Exception):
    """A verification step failed."""

    def __init__(self, step, reason):
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


def b64decode_strict(text, what, step):
    """Standard padded base64 that re-encodes to the same text."""
    if not isinstance(text, str):
        raise Failed(step, f"{what} is not a string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise Failed(step, f"{what} is not base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise Failed(step, f"{what} is not canonical base64")
    return raw


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def key_id(name, public_key):
    return hashlib.sha256(name.encode("utf-8") + b"\n" + b"\x01" + public_key).digest()[:4]


def format_millis(ms):
    dt = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def parse_millis(text):
    m = TIME_RE.match(text)
    if not m:
        return None
    year, month, day, hour, minute, second, millis = (int(g) for g in m.groups())
    if year < 1970:
        return None
    try:
        dt = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None
    return int(dt.timestamp()) * 1000 + millis


def valid_field(value):
    return (
        0 < len(value.encode("utf-8")) <= 1024
        and value.strip() == value
        and not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)
    )


def check_archived(archived):
    millis = parse_millis(archived)
    if millis is None or format_millis(millis) != archived:
        raise Failed("LeafData", "archived is not YYYY-MM-DDTHH:MM:SS.mmmZ")


def check_resource(resource):
    typ, _, rid = resource.partition("/")
    if not valid_field(resource) or not (typ and rid) or any(c.isspace() for c in resource):
        raise Failed("LeafData", "resource must be Type/id")


def leaf_lines(text, count, prefixes):
    lines = text.split("\n")
    if len(lines) != count + 1 or lines[count] != "":
        raise Failed("LeafData", f"leaf record must be exactly {count} newline-terminated lines")
    values = []
    for line, prefix in zip(lines[1:count], prefixes):
        if not line.startswith(prefix):
            raise Failed("LeafData", f"expected a '{prefix.strip()}' line")
        values.append(line[len(prefix):])
    return values


def check_leaf_v2(bundle, text):
    """A chartbridge-leaf/v2 record: keyed message token, salted hashes."""
    prefixes = ["message-token ", "content-hmac ", "received-hmac ", "transformation ", "resource ", "archived "]
    token, content, received, transformation, resource, archived = leaf_lines(text, 7, prefixes)
    for value in (token, content, received):
        if not HEX64_RE.match(value):
            raise Failed("LeafData", "message-token, content-hmac and received-hmac must be 64 lowercase hex digits")
    if not TRANSFORMATION_RE.match(transformation):
        raise Failed("LeafData", "transformation must be one word of a-z and -")
    check_resource(resource)
    check_archived(archived)
    summary = {
        "message_token": token,
        "content_hmac": content,
        "received_hmac": received,
        "transformation": transformation,
        "resource": resource,
        "archived": archived,
    }
    salt = bundle.get("content_salt")
    if bundle.get("format") != BUNDLE_FORMAT_V2 or not isinstance(salt, str) or not HEX64_RE.match(salt):
        raise Failed("LeafData", "a v2 leaf needs format /v2 and a content_salt of 64 lowercase hex digits")
    return summary, bytes.fromhex(salt)


def check_leaf(bundle):
    """Step LeafData: decode the canonical leaf record and compare fields."""
    raw = b64decode_strict(bundle.get("leaf_data"), "leaf_data", "LeafData")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Failed("LeafData", "leaf_data is not UTF-8") from None
    salt = None
    if text.split("\n", 1)[0] == LEAF_FORMAT_V2:
        summary, salt = check_leaf_v2(bundle, text)
    elif text.split("\n", 1)[0] == LEAF_FORMAT:
        prefixes = ["content-sha256 ", "message ", "resource ", "archived "]
        content, message, resource, archived = leaf_lines(text, 5, prefixes)
        if not HEX64_RE.match(content):
            raise Failed("LeafData", "content-sha256 is not 64 lowercase hex digits")
        src, _, mid = message.partition(":")
        if not valid_field(message) or not (src and mid):
            raise Failed("LeafData", "message must be source:id")
        check_resource(resource)
        check_archived(archived)
        if bundle.get("format") != BUNDLE_FORMAT or "content_salt" in bundle:
            raise Failed("LeafData", "a v1 leaf needs format /v1 and no content_salt")
        summary = {"content_sha256": content, "message": message, "resource": resource, "archived": archived}
    else:
        raise Failed("LeafData", "unknown leaf format line")
    if bundle.get("leaf") != summary:
        raise Failed("LeafData", "the 'leaf' fields disagree with leaf_data")
    return raw, summary, salt


def check_content(summary, salt, content):
    """Step ContentHash: SHA-256 (v1), or HMAC-SHA256(salt, SHA-256) (v2)."""
    digest = hashlib.sha256(content).digest()
    if salt is None:
        if digest.hex() != summary["content_sha256"]:
            raise Failed("ContentHash", f"content SHA-256 {digest.hex()} differs from the leaf's {summary['content_sha256']}")
        return f"SHA-256 {digest.hex()}"
    keyed = hmac.new(salt, digest, hashlib.sha256).hexdigest()
    if hmac.compare_digest(keyed, summary["content_hmac"]):
        return f"HMAC-SHA256(content_salt, SHA-256 {digest.hex()}) equals content-hmac: the archived content"
    if hmac.compare_digest(keyed, summary["received_hmac"]):
        return (f"HMAC-SHA256(content_salt, SHA-256 {digest.hex()}) equals received-hmac: "
                f"the content as received, before {summary['transformation']}")
    raise Failed("ContentHash", f"HMAC-SHA256(content_salt, SHA-256 {digest.hex()}) is neither content-hmac nor received-hmac")


def split_note(note):
    """Split a C2SP signed note into text and (name, key id, signature) lines."""
    if not isinstance(note, str) or any(ord(c) < 0x20 and c != "\n" for c in note):
        raise Failed("Checkpoint", "note is not text or has control characters")
    at = note.rfind("\n\n")
    if at < 0:
        raise Failed("Checkpoint", "no blank line before the signatures")
    text, block = note[: at + 1], note[at + 2 :]
    if not block.endswith("\n"):
        raise Failed("Checkpoint", "signature block must end with a newline")
    sigs = []
    for line in block[:-1].split("\n"):
        if len(sigs) >= MAX_SIGNATURES:
            raise Failed("Checkpoint", "too many signatures")
        if not line.startswith(EM_DASH + " "):
            raise Failed("Checkpoint", "signature line must start with an em dash and a space")
        name, _, b64 = line[2:].partition(" ")
        raw = b64decode_strict(b64, "signature", "Checkpoint")
        if not name or "+" in name or any(c.isspace() for c in name) or len(raw) < 5:
            raise Failed("Checkpoint", "bad signature line")
        sigs.append((name, raw[:4], raw[4:]))
    return text, sigs


def parse_checkpoint(text):
    """Parse the checkpoint body; require the timestamp extension line."""
    if not text.endswith("\n"):
        raise Failed("Checkpoint", "body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise Failed("Checkpoint", "need at least three non-empty lines")
    origin, size, root = lines[0], lines[1], lines[2]
    if not DECIMAL_RE.match(size) or int(size) > U64_MAX:
        raise Failed("Checkpoint", "bad tree size")
    root = b64decode_strict(root, "root hash", "Checkpoint")
    if len(root) != 32:
        raise Failed("Checkpoint", "root hash is not 32 bytes")
    ext = lines[3:]
    if not ext or not ext[0].startswith("timestamp "):
        raise Failed("Checkpoint", "no 'timestamp' line")
    ts = ext[0][len("timestamp ") :]
    if not DECIMAL_RE.match(ts) or int(ts) > 2**63 - 1:
        raise Failed("Checkpoint", "bad timestamp")
    if any(line.startswith("timestamp ") for line in ext[1:]):
        raise Failed("Checkpoint", "repeated timestamp")
    return {"origin": origin, "size": int(size), "root": root, "timestamp_ms": int(ts)}


def root_from_inclusion(leaf, index, size, path):
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        raise Failed("Inclusion", f"leaf index {index} is outside tree size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise Failed("Inclusion", "inclusion path is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise Failed("Inclusion", "inclusion path is too short")
    return r


def parse_vkey(vkey):
    """Parse `<name>+<hex key id>+<base64(0x01 || key)>`; check the key id."""
    name, _, rest = vkey.partition("+")
    hex8, _, b64 = rest.partition("+")
    if not name or any(c.isspace() for c in name) or not re.match(r"^[0-9a-fA-F]{8}$", hex8):
        raise ValueError(f"malformed verifier key {vkey!r}")
    raw = base64.b64decode(b64, validate=True)
    if len(raw) != 33 or raw[0] != 1:
        raise ValueError(f"not an Ed25519 verifier key: {vkey!r}")
    if key_id(name, raw[1:]).hex() != hex8.lower():
        raise ValueError(f"key id {hex8} does not match the key in {vkey!r}")
    return {"name": name, "key_id": hex8.lower(), "public_key": raw[1:]}


def key_entries(entries, where):
    """Key entries (bundle or --keys format) with parsed public keys."""
    keys = []
    if not isinstance(entries, list):
        raise Failed("Signature", f"{where} keys are not a list")
    for entry in entries:
        try:
            parsed = parse_vkey(entry["verifier_key"])
            ok = parsed["name"] == entry["name"] and parsed["key_id"] == entry["key_id"]
            valid_from = entry["valid_from_ms"]
            until, revoked = entry.get("valid_until_ms"), entry.get("revoked_at_ms")
            times = [valid_from] + [t for t in (until, revoked) if t is not None]
            ok = ok and all(isinstance(t, int) and not isinstance(t, bool) for t in times)
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise Failed("Signature", f"unusable key entry in {where}: {e}") from None
        if not ok:
            raise Failed("Signature", f"key entry {entry.get('name')!r} in {where}: name or key_id differ from verifier_key")
        parsed.update(valid_from_ms=valid_from, valid_until_ms=until, revoked_at_ms=revoked)
        keys.append(parsed)
    return keys


def check_signatures(text, sigs, keys, signed_at):
    """Steps Signature, KeyRevoked, KeyNotValid."""
    verified, seen = [], set()
    for name, kid, sig in sigs:
        matches = [k for k in keys if k["name"] == name and bytes.fromhex(k["key_id"]) == kid]
        if not matches:
            continue
        if len(matches) > 1:
            raise Failed("Signature", f"ambiguous key {name}+{kid.hex()}")
        key = matches[0]
        if (name, kid) in seen:
            continue
        seen.add((name, kid))
        try:
            Ed25519PublicKey.from_public_bytes(key["public_key"]).verify(sig, text.encode("utf-8"))
        except (InvalidSignature, ValueError):
            raise Failed("Signature", f"invalid signature by key {name}+{kid.hex()}") from None
        verified.append(key)
    if not verified:
        raise Failed("Signature", "no signature by a trusted key")
    good, rejected = [], []
    for key in verified:
        revoked = key["revoked_at_ms"] is not None and key["revoked_at_ms"] <= signed_at
        before = signed_at < key["valid_from_ms"]
        after = key["valid_until_ms"] is not None and signed_at >= key["valid_until_ms"]
        if revoked:
            rejected.append(("KeyRevoked", key))
        elif before or after:
            rejected.append(("KeyNotValid", key))
        else:
            good.append(key)
    if not good:
        step, key = sorted(rejected, key=lambda r: r[0] != "KeyRevoked")[0]
        raise Failed(step, f"key {key['name']}+{key['key_id']} does not vouch for a checkpoint signed at {signed_at} ms")
    return good


def verify(bundle, content, trusted, report):
    """Run every step in order; raise Failed at the first failure."""
    if not isinstance(bundle, dict) or bundle.get("format") not in (BUNDLE_FORMAT, BUNDLE_FORMAT_V2):
        raise Failed("Format", f"not a {BUNDLE_FORMAT} or {BUNDLE_FORMAT_V2} bundle")
    report("Format", bundle["format"])

    leaf_data, summary, salt = check_leaf(bundle)
    who = summary.get("message") or f"message token {summary.get('message_token')}"
    report("LeafData", f"canonical leaf record for {who} -> {summary['resource']}, archived {summary['archived']}")

    if content is not None:
        report("ContentHash", check_content(summary, salt, content))

    text, sigs = split_note(bundle.get("checkpoint"))
    cp = parse_checkpoint(text)
    report("Checkpoint", f"origin {cp['origin']}, size {cp['size']}, signed at {cp['timestamp_ms']} ms")

    index, size, path = bundle.get("leaf_index"), bundle.get("tree_size"), bundle.get("inclusion_path")
    for value in (index, size):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= U64_MAX:
            raise Failed("Inclusion", "leaf_index and tree_size must be unsigned integers")
    if size != cp["size"]:
        raise Failed("Inclusion", f"tree_size {size} differs from the checkpoint size {cp['size']}")
    if not isinstance(path, list) or len(path) > MAX_PATH:
        raise Failed("Inclusion", "inclusion_path must be a list of at most 64 hashes")
    hashes = [b64decode_strict(p, f"inclusion_path[{i}]", "Inclusion") for i, p in enumerate(path)]
    if any(len(h) != 32 for h in hashes):
        raise Failed("Inclusion", "every inclusion path element must be 32 bytes")
    root = root_from_inclusion(leaf_hash(leaf_data), index, size, hashes)
    if root != cp["root"]:
        raise Failed("Inclusion", f"path leads to {root.hex()}, checkpoint root is {cp['root'].hex()}")
    report("Inclusion", f"leaf {index} of {size} leads to root {root.hex()}")

    keys = trusted if trusted is not None else key_entries(bundle.get("keys"), "the bundle")
    good = check_signatures(text, sigs, keys, cp["timestamp_ms"])
    names = ", ".join(f"{k['name']}+{k['key_id']}" for k in good)
    report("Signature", f"Ed25519 signature by {names} (key id = SHA-256(name || 0x0A || 0x01 || key)[:4] checked)")
    report("KeyRevoked", f"not revoked at {cp['timestamp_ms']} ms")
    report("KeyNotValid", f"valid at {cp['timestamp_ms']} ms")


def load_trusted(args):
    if not args.key and not args.keys:
        return None
    trusted = []
    for item in args.key or []:
        lines = [item]
        if "+" not in item:
            with open(item, encoding="utf-8") as f:
                lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        for line in lines:
            parsed = parse_vkey(line)
            parsed.update(valid_from_ms=-(2**63), valid_until_ms=None, revoked_at_ms=None)
            trusted.append(parsed)
    if args.keys:
        with open(args.keys, encoding="utf-8") as f:
            trusted.extend(key_entries(json.load(f), args.keys))
    return trusted


def main():
    parser = argparse.ArgumentParser(description="Verify a chartbridge proof bundle.")
    parser.add_argument("bundle", help="proof bundle JSON file")
    parser.add_argument("--content", help="archived content bytes to check against the leaf")
    parser.add_argument("--key", action="append", help="trusted verifier key, or a file of them")
    parser.add_argument("--keys", help="JSON array of trusted key entries with validity")
    args = parser.parse_args()
    try:
        trusted = load_trusted(args)
        with open(args.bundle, "rb") as f:
            raw = f.read()
        content = None
        if args.content:
            with open(args.content, "rb") as f:
                content = f.read()
    except (OSError, ValueError, binascii.Error, Failed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def report(step, detail):
        print(f"PASS {step}: {detail}")

    try:
        try:
            bundle = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Failed("Format", "not JSON") from None
        verify(bundle, content, trusted, report)
    except Failed as e:
        print(f"FAIL {e.step}: {e.reason}")
        return 1
    if content is None:
        print("WARNING: no --content given: the content hash was not checked")
    if trusted is None:
        print("WARNING: keys taken from the bundle itself; compare the key id with the operator's published key")
    print("VERIFIED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
