#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_h2 (fuzz/corpus/h2/<sha1>): valid and odd
HTTP/2 frame sequences a client could send. Each seed starts with fuzz_h2's
three bytes (shape, split, app seed; see fuzz/fuzz_h2.c). Header blocks use
HPACK without Huffman coding, so that mutations keep them readable.

Usage: python3 fuzz/h2_seeds.py [DIR]  (default fuzz/corpus/h2)
"""
import hashlib
import os
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20

# shape bits (fuzz_h2.c): 1 preface given, 2 big connection window, 4 extended CONNECT.
AUTO = 1


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def hint(value, prefix_bits, first):
    """An HPACK integer with `first` holding the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hstr(s):
    b = s.encode() if isinstance(s, str) else s
    return hint(len(b), 7, 0) + b


STATIC = {(":method", "GET"): 2, (":method", "POST"): 3, (":path", "/"): 4,
          (":scheme", "http"): 6, (":scheme", "https"): 7}
STATIC_NAMES = {":authority": 1, ":method": 2, ":path": 4, ":scheme": 6, "content-length": 28,
                "cookie": 32, "host": 38, "user-agent": 58}


def hpack(fields, index=False):
    """Indexed when in the static table, else a literal (with incremental
    indexing when `index`), its name indexed when the table has it."""
    out = b""
    for name, value in fields:
        if (name, value) in STATIC:
            out += hint(STATIC[(name, value)], 7, 0x80)
            continue
        first, bits = (0x40, 6) if index else (0x00, 4)
        if name in STATIC_NAMES:
            out += hint(STATIC_NAMES[name], bits, first) + hstr(value)
        else:
            out += bytes([first]) + hstr(name) + hstr(value)
    return out


def req(method="GET", path="/", extra=(), authority="x.test", scheme="https"):
    f = [(":method", method), (":scheme", scheme), (":path", path)]
    if authority:
        f.append((":authority", authority))
    return f + list(extra)


def headers(sid, fields, end_stream=True, index=False):
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid, hpack(fields, index))


def settings(*pairs):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def start():
    return PREFACE + settings() + frame(SETTINGS, ACK, 0)


def seed(shape, split, appseed, body):
    prefix = b"" if shape & AUTO else start()
    return bytes([shape, split, appseed]) + prefix + body


def seeds():
    out = {}
    out["get"] = seed(AUTO, 0, 1, headers(1, req()))
    out["get-own-preface"] = seed(0, 0, 2, headers(1, req(extra=[("user-agent", "seed/1")])))
    body = b"a" * 3000
    post = headers(1, req("POST", "/upload", [("content-length", str(len(body)))]), end_stream=False)
    post += frame(DATA, 0, 1, body[:1000]) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 4096))
    post += frame(DATA, 0, 1, body[1000:2000]) + frame(DATA, END_STREAM, 1, body[2000:])
    out["post"] = seed(AUTO | 2, 0, 3, post)
    out["post-bytewise"] = seed(AUTO, 1, 4, post)
    many = b"".join(headers(2 * i + 1, req(path="/%d" % i), index=(i % 2 == 0)) for i in range(20))
    out["many-streams"] = seed(AUTO | 0x18, 7, 5, many)
    block = hpack(req(extra=[("x-a", "1" * 40), ("x-b", "2" * 40)]))
    cont = frame(HEADERS, END_STREAM, 1, block[:10]) + frame(CONTINUATION, 0, 1, block[10:30])
    cont += frame(CONTINUATION, END_HEADERS, 1, block[30:])
    out["continuation"] = seed(AUTO, 3, 6, cont)
    rapid = b"".join(headers(2 * i + 1, req()) + frame(RST_STREAM, 0, 2 * i + 1, struct.pack(">I", 8))
                     for i in range(12))
    out["rapid-reset"] = seed(AUTO | 0x20, 0, 7, rapid)
    empty = headers(1, req("POST"), end_stream=False) + frame(DATA, 0, 1) * 6 + frame(DATA, END_STREAM, 1)
    out["empty-data"] = seed(AUTO | 0x40, 0, 8, empty)
    misc = settings((1, 4096), (3, 50), (4, 100000), (5, 16384), (6, 8192))
    misc += frame(PING, 0, 0, b"12345678") + frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 15))
    misc += headers(1, req()) + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1000))
    misc += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100000)) + frame(PING, ACK, 0, b"87654321")
    out["control"] = seed(AUTO, 16, 9, misc)
    tr = headers(1, req("POST", extra=[("te", "trailers")]), end_stream=False)
    tr += frame(DATA, 0, 1, b"hello") + frame(HEADERS, END_HEADERS | END_STREAM, 1, hpack([("x-sum", "5")]))
    out["trailers"] = seed(AUTO, 2, 10, tr)
    ws = headers(1, [(":method", "CONNECT"), (":authority", "x.test:443")], end_stream=False)
    ws += frame(DATA, 0, 1, b"tunnel")
    ws += headers(3, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                      (":path", "/chat"), (":authority", "x.test"), ("sec-websocket-version", "13")],
                  end_stream=False)
    ws += frame(DATA, 0, 3, b"\x81\x05hello") + frame(RST_STREAM, 0, 3, struct.pack(">I", 0))
    out["connect"] = seed(AUTO | 4, 0, 11, ws)
    big = headers(1, req(extra=[("x-%d" % i, "v" * 150) for i in range(14)]))
    big += headers(3, req(path="/" + "p" * 300))
    big += headers(5, req(extra=[("f%d" % i, "1") for i in range(17)]))
    big += headers(7, req(extra=[("x-long", "l" * 600)]))
    big += headers(9, req())
    out["limits"] = seed(AUTO, 0, 12, big)
    cookies = headers(1, req(extra=[("cookie", "a=" + "1" * 200), ("accept", "*/*"),
                                    ("cookie", "b=" + "2" * 200), ("cookie", "c=3"),
                                    ("host", "other.test")]))
    cookies += headers(3, req(authority=None, extra=[("host", "h.test"), ("cookie", "z=1")]))
    out["cookies"] = seed(AUTO, 5, 13, cookies)
    pad = frame(HEADERS, END_HEADERS | PADDED, 1, b"\x04" + hpack(req("POST")) + b"\0" * 4)
    pad += frame(DATA, PADDED, 1, b"\x03abc\0\0\0") + frame(DATA, END_STREAM | PADDED, 1, b"\x00")
    pad += frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0) + b"bye")
    out["padding-goaway"] = seed(AUTO, 0, 14, pad)
    odd = headers(1, req(extra=[("content-length", "10")]), end_stream=False)
    odd += frame(DATA, END_STREAM, 1, b"short")  # shorter than its content-length
    odd += frame(DATA, 0, 7, b"idle") + headers(3, req(extra=[("Upper", "x")]))
    odd += frame(WINDOW_UPDATE, 0, 1, b"\0\0\0\0")
    out["odd"] = seed(AUTO | 0x20, 4, 15, odd)
    flood = headers(1, req("POST"), end_stream=False) + frame(DATA, 0, 1, b"z" * 4000)
    out["over-window"] = seed(AUTO, 0, 16, flood)
    out["bad-preface"] = bytes([0, 0, 17]) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    expect = headers(1, req("POST", extra=[("expect", "100-continue"), ("content-length", "4")]),
                     end_stream=False) + frame(DATA, END_STREAM, 1, b"ping")
    expect += headers(3, req("OPTIONS", "*"))
    out["expect"] = seed(AUTO, 9, 18, expect)
    refused = headers(1, req("POST", extra=[("x-%d" % i, "v" * 150) for i in range(14)]), end_stream=False)
    refused += frame(DATA, 0, 1, b"r" * 900) + frame(DATA, END_STREAM, 1, b"r" * 100)
    refused += headers(3, req("POST", "/" + "p" * 300), end_stream=False) + frame(DATA, END_STREAM, 3, b"x")
    out["limits-post"] = seed(AUTO, 0, 19, refused)
    pings = headers(1, req()) + frame(PING, 0, 0, b"01234567") * 40 + settings() * 10
    out["slow-reader"] = seed(AUTO | 0x08, 3, 0x80 | 20, pings)
    ending = b"".join(headers(2 * i + 1, req("POST"), end_stream=False) + frame(DATA, 0, 2 * i + 1, b"d" * 50)
                      for i in range(6))
    out["terminate"] = seed(AUTO | 0x18, 11, 0x40 | 21, ending)
    flood = headers(1, req()) + frame(PING, 0, 0, b"p" * 8) * 1100
    out["ping-flood"] = seed(AUTO, 0, 22, flood)
    return out


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "h2")
    os.makedirs(d, exist_ok=True)
    for name, data in seeds().items():
        path = os.path.join(d, hashlib.sha1(data).hexdigest())
        with open(path, "wb") as f:
            f.write(data)
        print(name, len(data), path)


if __name__ == "__main__":
    main()
