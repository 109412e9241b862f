#!/usr/bin/env python3
"""Verify a drover ledger export offline, without drover.

    verify-ledger-export.py EXPORT --key PUB [--key PUB ...]

EXPORT is a file written by `drover audit export` (`-` for stdin); each PUB
is an Ed25519 public key (PEM, "BEGIN PUBLIC KEY") to trust, obtained out of
band: the key printed inside the export proves nothing by itself.

Exit status: 0 valid, 3 not valid (the first bad line is named), 2 usage or
I/O error.

This is an independent implementation of the algorithm in
docs/ledger-format.md, using only the Python standard library and the
`cryptography` package; it shares no code with drover.
"""

import argparse
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "drover-ledger-export"
VERSION = 1
GENESIS_HASH = "sha256:" + "0" * 64
HEADER_FIELDS = {
    "format", "version", "exported_at", "keyid", "public_key", "first_seq",
    "prev_hash", "last_seq", "last_hash", "signed_from", "signature",
}
ENTRY_FIELDS = {
    "seq", "time", "actor", "action", "subjects", "details", "prev_hash",
    "hash", "keyid", "signature",
}


class Bad(Exception):
    """A line that is not as written: (line number, seq or None, reason)."""

    def __init__(self, line, seq, reason):
        super().__init__(reason)
        self.line, self.seq, self.reason = line, seq, reason

    def __str__(self):
        where = f"line {self.line}"
        if self.seq is not None:
            where += f" (entry {self.seq})"
        return f"{where}: {self.reason}"


def canonical(obj):
    """Canonical JSON: sorted keys, no whitespace, minimal escaping, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def keyid(raw):
    """securesystemslib's key id of an Ed25519 public key (32 raw bytes)."""
    doc = ('{"keytype":"ed25519","keyval":{"public":"%s"},"scheme":"ed25519"}'
           % raw.hex())
    return hashlib.sha256(doc.encode()).hexdigest()


def load_key(path):
    with open(path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    raw = key.public_bytes(serialization.Encoding.Raw,
                           serialization.PublicFormat.Raw)
    return keyid(raw), key


def is_int(v):
    return type(v) is int  # bool is an int subclass, and is not one here


def is_str(v):
    return type(v) is str


def decode_sig(text):
    """Standard padded base64, canonical (re-encodes to itself), or None."""
    if not is_str(text):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return raw if base64.b64encode(raw).decode() == text else None


def verifies(key, message, signature):
    try:
        key.verify(signature, message)
        return True
    except InvalidSignature:
        return False


def parse_object(text, fields):
    """The line's JSON object, which must have exactly `fields`."""
    if text == "":
        raise ValueError("empty line")

    def no_constants(name):
        raise ValueError(f"not JSON ({name} is not a JSON value)")

    try:
        obj = json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e})")
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    extra = sorted(set(obj) - fields)
    if extra:
        raise ValueError(f"unexpected field {extra[0]!r}")
    missing = sorted(fields - set(obj))
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    return obj


def check_header(text, trusted):
    try:
        h = parse_object(text, HEADER_FIELDS)
    except ValueError as e:
        raise Bad(1, None, f"not an export header: {e}")
    if h["format"] != FORMAT:
        raise Bad(1, None, f"not a drover ledger export (format {h['format']!r})")
    if not is_int(h["version"]) or h["version"] != VERSION:
        raise Bad(1, None, f"export version {h['version']!r} is not supported "
                           f"(this verifier reads version {VERSION})")
    for name in ("exported_at", "keyid", "public_key", "prev_hash",
                 "last_hash", "signature"):
        if not is_str(h[name]):
            raise Bad(1, None, f"bad header field: {name} is not a string")
    for name in ("first_seq", "last_seq"):
        if not is_int(h[name]) or h[name] < 0:
            raise Bad(1, None, f"bad header field: {name} is not a number >= 0")
    if h["signed_from"] is not None and (not is_int(h["signed_from"])
                                         or h["signed_from"] < 0):
        raise Bad(1, None, "bad header field: signed_from is not a number or null")
    key = trusted.get(h["keyid"])
    if key is None:
        raise Bad(1, None, f"the header is signed by key {h['keyid']}, which is "
                           "not a trusted key (the key inside the file proves "
                           "nothing by itself)")
    sig = decode_sig(h["signature"])
    unsigned = {k: v for k, v in h.items() if k != "signature"}
    if sig is None or not verifies(key, canonical(unsigned), sig):
        raise Bad(1, None, "the header's signature does not match it under key "
                           f"{h['keyid']} (the header was altered)")
    if h["first_seq"] == 0:
        raise Bad(1, None, "the header's first_seq is 0; entries are numbered from 1")
    if h["first_seq"] == 1 and h["prev_hash"] != GENESIS_HASH:
        raise Bad(1, None, "the header's prev_hash for entry 1 is not the genesis hash")
    if h["last_seq"] + 1 < h["first_seq"]:
        raise Bad(1, None, "the header's last_seq is before its first_seq")
    return h


def check_entry(line_no, text, header, expected, prev, trusted):
    """Check one entry line; returns (its hash, whether it is signed)."""
    try:
        e = parse_object(text, ENTRY_FIELDS)
    except ValueError as err:
        raise Bad(line_no, None, str(err))
    seq = e["seq"] if is_int(e["seq"]) and e["seq"] >= 0 else None
    if seq is None:
        raise Bad(line_no, None, "bad entry field: seq is not a number >= 0")
    for name in ("time", "actor", "action", "prev_hash", "hash"):
        if not is_str(e[name]):
            raise Bad(line_no, seq, f"bad entry field: {name} is not a string")
    if not isinstance(e["subjects"], list) or not all(is_str(s) for s in e["subjects"]):
        raise Bad(line_no, seq, "bad entry field: subjects is not a list of strings")
    for name in ("keyid", "signature"):
        if e[name] is not None and not is_str(e[name]):
            raise Bad(line_no, seq, f"bad entry field: {name} is not a string or null")

    if expected > header["last_seq"]:
        raise Bad(line_no, seq, "the header says the export ends at entry "
                                f"{header['last_seq']}: lines were added")
    if seq != expected:
        raise Bad(line_no, seq, f"entry {expected} was expected here "
                                "(a line was removed, added or moved)")
    hashed = {k: v for k, v in e.items() if k not in ("hash", "keyid", "signature")}
    if "sha256:" + hashlib.sha256(canonical(hashed)).hexdigest() != e["hash"]:
        raise Bad(line_no, seq, "hash does not match its content "
                                "(changed after it was written)")
    if e["prev_hash"] != prev:
        what = ("the header's prev_hash" if seq == header["first_seq"]
                else f"entry {seq - 1}'s hash")
        raise Bad(line_no, seq, f"prev_hash does not match {what} "
                                "(lines were removed, added or reordered)")

    signed_from = header["signed_from"]
    must_be_signed = signed_from is not None and seq >= signed_from
    kid, sig_text = e["keyid"], e["signature"]
    if kid is None and sig_text is None:
        if must_be_signed:
            raise Bad(line_no, seq, "unsigned, but the header says entries are "
                                    f"signed from entry {signed_from} on "
                                    "(its signature was stripped)")
        return e["hash"], False
    if kid is None or sig_text is None:
        raise Bad(line_no, seq, "has only one of keyid and signature")
    key = trusted.get(kid)
    if key is None:
        raise Bad(line_no, seq, f"signed by key {kid}, which is not a trusted key")
    sig = decode_sig(sig_text)
    if sig is None or not verifies(key, e["hash"].encode("utf-8"), sig):
        raise Bad(line_no, seq, f"signature does not match its hash under key {kid} "
                                "(the signature was altered, or the entry "
                                "re-hashed after signing)")
    if not must_be_signed:
        if signed_from is None:
            raise Bad(line_no, seq, "signed, but the header says no entry is")
        raise Bad(line_no, seq, "signed, but the header says signing began "
                                f"at entry {signed_from}")
    return e["hash"], True


def verify(stream, trusted):
    """Raise Bad for the first bad line; return (header, signed, unsigned)."""
    lines = iter(stream)
    line_no = 0

    def next_text():
        nonlocal line_no
        raw = next(lines, None)
        if raw is None:
            return None
        line_no += 1
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Bad(line_no, None, "not UTF-8")

    text = next_text()
    if text is None:
        raise Bad(1, None, "the file is empty: no header line")
    header = check_header(text, trusted)

    expected, prev = header["first_seq"], header["prev_hash"]
    signed = unsigned = 0
    while (text := next_text()) is not None:
        prev, was_signed = check_entry(line_no, text, header, expected, prev, trusted)
        signed += was_signed
        unsigned += not was_signed
        expected += 1

    last = expected - 1
    if last < header["last_seq"]:
        after = "the header" if last < header["first_seq"] else f"entry {last}"
        raise Bad(line_no + 1, expected,
                  f"missing: the header says the export runs to entry "
                  f"{header['last_seq']}, but the file ends after {after} "
                  "(lines were removed from the end)")
    if prev != header["last_hash"]:
        raise Bad(line_no, last if last >= header["first_seq"] else None,
                  "the header records a different hash for the last entry")
    return header, signed, unsigned


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export", help="the export file, or - for stdin")
    ap.add_argument("--key", action="append", required=True, metavar="PUB",
                    help="a trusted Ed25519 public key, PEM (repeatable)")
    args = ap.parse_args()
    try:
        trusted = dict(load_key(p) for p in args.key)
        if args.export == "-":
            result = verify(sys.stdin.buffer, trusted)
        else:
            with open(args.export, "rb") as f:
                result = verify(f, trusted)
    except Bad as bad:
        print(f"export NOT valid: {bad}")
        return 3
    except (OSError, ValueError) as e:
        print(f"verify-ledger-export: {e}", file=sys.stderr)
        return 2
    header, signed, unsigned = result
    msg = (f"export valid: entries {header['first_seq']}–{header['last_seq']}, "
           f"{signed} signed by trusted keys")
    if unsigned:
        msg += f", {unsigned} unsigned (written before ledger signing)"
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
