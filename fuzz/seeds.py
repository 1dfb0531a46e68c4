#!/usr/bin/env python3
"""Builds the seed corpora for the cargo-fuzz targets (standard library only).

    python3 fuzz/seeds.py            # from the repository root, or from fuzz/

corpus/sip_scan/    every SIP fixture of the test suite, copied byte for byte
                    (tests/torture/rfc4475/*.dat, tests/torture/rfc5118/*.dat,
                    tests/corpus/pbx/*.sip), plus a few TCP stream buffers for `frame`
                    (keep-alive pings, two messages back to back, a cut message).
corpus/hep_decode/  HEPv3 packets wrapping those SIP messages (HEP3 + u16 total length
                    including the 6-byte header, then chunks: u16 vendor, u16 type, u16 length
                    including the 6-byte chunk header, payload; big-endian), as the capture
                    agents send them (IPv4 and IPv6 addresses, ports, time, proto type 1,
                    capture id, payload 0x0f), plus variants: auth key 0x0e, correlation id
                    0x11, a gzipped payload 0x10, a vendor chunk, the `EEP3` magic, and two
                    packets back to back as on a TCP stream.

The corpus folders are git-ignored: run this script again to recreate them. libFuzzer adds
the inputs it finds to the same folders while it runs.
"""

import gzip
import shutil
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
SIP_SOURCES = [
    ("tests/torture/rfc4475", "*.dat"),
    ("tests/torture/rfc5118", "*.dat"),
    ("tests/corpus/pbx", "*.sip"),
]
MAX_HEP = 65_535


def chunk(kind: int, body: bytes, vendor: int = 0) -> bytes:
    return struct.pack(">HHH", vendor, kind, len(body) + 6) + body


def hep(chunks: list, magic: bytes = b"HEP3") -> bytes:
    body = b"".join(chunks)
    return magic + struct.pack(">H", len(body) + 6) + body


def ipv4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ipv6(a: str) -> bytes:
    import ipaddress

    return ipaddress.IPv6Address(a).packed


def sip_packet(sip: bytes, *, v6: bool = False, extra: list = (), payload_kind: int = 0x0F,
               magic: bytes = b"HEP3") -> bytes:
    if v6:
        addrs = [chunk(0x01, b"\x0a"), chunk(0x05, ipv6("2001:db8::5")),
                 chunk(0x06, ipv6("2001:db8::20"))]
    else:
        addrs = [chunk(0x01, b"\x02"), chunk(0x03, ipv4("10.0.0.5")),
                 chunk(0x04, ipv4("10.0.0.20"))]
    chunks = addrs + [
        chunk(0x02, b"\x11"),                        # UDP
        chunk(0x07, struct.pack(">H", 5060)),
        chunk(0x08, struct.pack(">H", 5062)),
        chunk(0x09, struct.pack(">I", 1_700_000_000)),
        chunk(0x0A, struct.pack(">I", 42)),
        chunk(0x0B, b"\x01"),                        # SIP
        chunk(0x0C, struct.pack(">I", 101)),
        *extra,
        chunk(payload_kind, sip),
    ]
    return hep(chunks, magic)


def write(folder: Path, name: str, data: bytes) -> None:
    (folder / name).write_bytes(data)


def main() -> None:
    sip_dir = FUZZ / "corpus" / "sip_scan"
    hep_dir = FUZZ / "corpus" / "hep_decode"
    for d in (sip_dir, hep_dir):
        d.mkdir(parents=True, exist_ok=True)

    messages = []
    for folder, pattern in SIP_SOURCES:
        for path in sorted((ROOT / folder).glob(pattern)):
            data = path.read_bytes()
            name = f"{Path(folder).name}-{path.name}"
            shutil.copyfile(path, sip_dir / name)
            messages.append((name, data))

    # Stream buffers for `frame` (RFC 3261 §18.3, RFC 5626 §3.5.1).
    options = (b"OPTIONS sip:2001@192.0.2.10 SIP/2.0\r\n"
               b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
               b"From: <sip:pbx@192.0.2.1>;tag=a\r\nTo: <sip:2001@192.0.2.10>\r\n"
               b"Call-ID: c1@192.0.2.1\r\nCSeq: 1 OPTIONS\r\nl: 3\r\n\r\nabc")
    write(sip_dir, "stream-ping-then-message", b"\r\n\r\n" + options)
    write(sip_dir, "stream-two-messages", options + options)
    write(sip_dir, "stream-cut-body", options[:-1])
    write(sip_dir, "stream-crlf", b"\r\n")

    count = 0
    for i, (name, sip) in enumerate(messages):
        if len(sip) + 200 > MAX_HEP:
            continue
        write(hep_dir, f"{name}.hep", sip_packet(sip, v6=(i % 3 == 0)))
        count += 1

    base = dict(messages)
    invite = base.get("pbx-asterisk-pjsip-pai.sip") or messages[0][1]
    variants = {
        "auth-key.hep": sip_packet(invite, extra=[chunk(0x0E, b"s3cret")]),
        "correlation.hep": sip_packet(invite, extra=[chunk(0x11, b"abc@host")]),
        "gzip-payload.hep": sip_packet(gzip.compress(invite, mtime=0), payload_kind=0x10),
        "vendor-chunk.hep": sip_packet(invite, extra=[chunk(0x07, b"\xff\x00", vendor=0x0001)]),
        "eep3.hep": sip_packet(invite, magic=b"EEP3"),
        "payload-only.hep": hep([chunk(0x0F, invite)]),
        "tcp-two-packets.hep": sip_packet(invite) + sip_packet(options, v6=True),
    }
    for fname, data in variants.items():
        write(hep_dir, fname, data)

    print(f"{len(messages) + 4} SIP seeds in {sip_dir.relative_to(ROOT)}, "
          f"{count + len(variants)} HEP seeds in {hep_dir.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
