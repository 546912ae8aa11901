"""RFC 6455 conformance with a raw client, after the Autobahn|Testsuite
categories: 1 framing, 2 ping/pong, 3 reserved bits, 4 opcodes,
5 fragmentation, 6 UTF-8, 7 close handling. The server runs the echo app; every
protocol violation must be answered with the close code asserted here and
the end of the TCP connection."""

from __future__ import annotations

import os
import struct
import time

import pytest

from ws_util import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RSV1,
    RSV2,
    RSV3,
    build_frame,
    close_payload,
    open_ws,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def echo(wss):
    ws = open_ws(wss, "/echo")
    yield ws
    ws.close_socket()


# -- 1 framing ---------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 128, 65535, 65536, 65537, 1 << 20])
@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY])
def test_1_payload_lengths(echo, op, n):
    payload = (b"*" * n) if op == OP_TEXT else os.urandom(n)
    echo.send_frame(op, payload)
    got_op, got = echo.read_message(timeout=10)
    assert got_op == op
    assert got == payload


@pytest.mark.parametrize("n,bits", [(0, 16), (5, 16), (5, 64), (125, 64), (200, 64), (65535, 64)])
def test_1_non_minimal_length_encodings_accepted(echo, n, bits):
    payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
    echo.send_frame(OP_BINARY, payload, length_bits=bits)
    assert echo.recv_binary() == payload


def test_1_server_uses_minimal_length_encodings(echo):
    for n in (125, 126, 65535, 65536):
        echo.send_binary(b"a" * n)
        echo.recv_binary()
        raw = echo.received[-1]
        assert len(raw.payload) == n
    # the headers themselves: re-read raw bytes for one message of each class
    for n, head in ((125, b"\x82\x7d"), (126, b"\x82\x7e\x00\x7e"), (65536, b"\x82\x7f" + struct.pack("!Q", 65536))):
        echo.send_binary(b"b" * n)
        while len(echo.raw.buf) < len(head):
            assert echo.raw._fill(timeout=5)
        assert echo.raw.buf[:len(head)] == head, echo.raw.buf[:12]
        echo.recv_binary()


def test_1_payload_sent_byte_by_byte(echo):
    data = build_frame(OP_TEXT, b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!")
    for i in range(len(data)):
        echo.send_raw(data[i:i + 1])
        time.sleep(0.001)
    assert echo.recv_text() == "Hello-µ@ßöäüàá-UTF-8!!"


@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY])
def test_1_large_frame_in_chops(echo, op):
    """A 65536-byte message written in 997-byte pieces (Autobahn 1.1.8/1.2.8)."""
    payload = b"*" * 65536 if op == OP_TEXT else os.urandom(65536)
    data = build_frame(op, payload)
    for i in range(0, len(data), 997):
        echo.send_raw(data[i:i + 997])
        if i % (997 * 8) == 0:
            time.sleep(0.001)
    assert echo.read_message(timeout=10) == (op, payload)


def test_1_many_frames_in_one_segment(echo):
    msgs = [os.urandom(i % 300) for i in range(200)]
    echo.send_raw(b"".join(build_frame(OP_BINARY, m) for m in msgs))
    for m in msgs:
        assert echo.recv_binary() == m


def test_1_64bit_length_with_top_bit_set(echo):
    echo.send_raw(b"\x82\xff" + struct.pack("!Q", 1 << 63) + os.urandom(4) + b"xxxx")
    echo.fail_with(1002)


def test_1_mask_key_zero(echo):
    echo.send_frame(OP_TEXT, b"zero mask", mask_key=b"\x00\x00\x00\x00")
    assert echo.recv_text() == "zero mask"


# -- 2 ping/pong -------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"ping", bytes(range(125)), b"\xff\xfe\x00binary"])
def test_2_ping_answered_with_same_payload(echo, payload):
    echo.send_frame(OP_PING, payload)
    f = echo.read_frame()
    assert f.opcode == OP_PONG and f.fin, f
    assert f.payload == payload


def test_2_ping_126_bytes_is_1002(echo):
    echo.send_frame(OP_PING, b"x" * 126)
    echo.fail_with(1002)


def test_2_ping_126_bytes_16bit_header_is_1002(echo):
    echo.send_frame(OP_PING, b"x" * 126, length_bits=16)
    echo.fail_with(1002)


def test_2_unsolicited_pong_ignored(echo):
    echo.send_frame(OP_PONG, b"unsolicited")
    echo.send_frame(OP_PONG, b"")
    echo.send_text("after pong")
    op, data = echo.read_message()
    assert (op, data) == (OP_TEXT, b"after pong")


def test_2_ten_pings_ten_pongs_in_order(echo):
    echo.send_raw(b"".join(build_frame(OP_PING, f"p{i}".encode()) for i in range(10)))
    got = []
    for _ in range(10):
        f = echo.read_frame()
        assert f.opcode == OP_PONG
        got.append(f.payload)
    assert got == [f"p{i}".encode() for i in range(10)]


def test_2_ping_byte_by_byte(echo):
    data = build_frame(OP_PING, b"slow ping")
    for i in range(len(data)):
        echo.send_raw(data[i:i + 1])
        time.sleep(0.002)
    f = echo.read_frame()
    assert f.opcode == OP_PONG and f.payload == b"slow ping"


def test_2_pong_with_126_bytes_is_1002(echo):
    echo.send_frame(OP_PONG, b"x" * 126)
    echo.fail_with(1002)


# -- 3 reserved bits ---------------------------------------------------------------

@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV2, RSV1 | RSV2 | RSV3])
@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY, OP_PING])
def test_3_reserved_bits_without_extension_is_1002(echo, rsv, op):
    echo.send_frame(op, b"rsv", rsv=rsv)
    echo.fail_with(1002, context=f"rsv={rsv:03b} op={op}: ")


def test_3_reserved_bits_after_a_valid_message(echo):
    echo.send_batch((OP_TEXT, b"valid"), (OP_TEXT, b"bad", {"rsv": RSV2}), (OP_PING, b"never answered"))
    echo.expect_close(1002)
    # the echo of the valid message may come before the close or not at all
    # (Autobahn 3.2: NON-STRICT without it): the app may not have run yet
    texts = [x.payload for x in echo.received if x.opcode == OP_TEXT]
    assert texts in ([b"valid"], []), echo.received
    assert not any(x.opcode == OP_PONG for x in echo.received), "a ping after the violation was answered"


# -- 4 opcodes ---------------------------------------------------------------------

@pytest.mark.parametrize("op", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_4_reserved_opcodes_are_1002(echo, op):
    echo.send_frame(op, b"" if op >= 8 else b"reserved")
    echo.fail_with(1002, context=f"opcode {op:#x}: ")


@pytest.mark.parametrize("op", [3, 0xB])
def test_4_reserved_opcode_after_valid_message(echo, op):
    echo.send_batch((OP_TEXT, b"first"), (op, b"payload"), (OP_TEXT, b"never echoed"))
    echo.expect_close(1002)
    texts = [x.payload for x in echo.received if x.opcode == OP_TEXT]
    assert texts in ([b"first"], []), echo.received  # never the message after the violation


# -- 5 fragmentation ---------------------------------------------------------------

@pytest.mark.parametrize("sizes", [[1, 1], [3, 0, 5], [0, 0, 0, 7], [100] * 20, [70000, 1, 70000]])
@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY])
def test_5_fragmented_messages(echo, op, sizes):
    parts = [(b"abcdefghij" * (n // 10 + 1))[:n] for n in sizes]
    for i, p in enumerate(parts):
        echo.send_frame(op if i == 0 else OP_CONT, p, fin=i == len(parts) - 1)
    got_op, got = echo.read_message(timeout=10)
    assert got_op == op and got == b"".join(parts)


def test_5_ping_between_fragments_answered_first(echo):
    echo.send_frame(OP_TEXT, b"frag1-", fin=False)
    echo.send_frame(OP_PING, b"in between")
    f = echo.read_frame()
    assert f.opcode == OP_PONG and f.payload == b"in between", f
    echo.send_frame(OP_CONT, b"frag2-", fin=False)
    echo.send_frame(OP_PONG, b"unsolicited between")
    echo.send_frame(OP_CONT, b"end", fin=True)
    assert echo.recv_text() == "frag1-frag2-end"


def test_5_pings_between_many_fragments(echo):
    for i in range(10):
        echo.send_frame(OP_BINARY if i == 0 else OP_CONT, bytes([i]) * 10, fin=False)
        echo.send_frame(OP_PING, str(i).encode())
    echo.send_frame(OP_CONT, b"", fin=True)
    pongs = []
    for _ in range(10):
        f = echo.read_frame()
        assert f.opcode == OP_PONG, f
        pongs.append(f.payload)
    assert pongs == [str(i).encode() for i in range(10)]
    assert echo.recv_binary() == b"".join(bytes([i]) * 10 for i in range(10))


@pytest.mark.parametrize("fin", [True, False])
def test_5_continuation_without_start_is_1002(echo, fin):
    echo.send_frame(OP_CONT, b"orphan", fin=fin)
    echo.fail_with(1002)


def test_5_continuation_after_complete_message_is_1002(echo):
    echo.send_batch((OP_TEXT, b"complete"), (OP_CONT, b"orphan"))
    echo.expect_close(1002)
    assert [x.payload for x in echo.received if x.opcode == OP_TEXT] in ([b"complete"], [])


@pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY])
def test_5_new_data_frame_inside_fragmented_message_is_1002(echo, second):
    echo.send_batch((OP_TEXT, b"start", {"fin": False}), (second, b"intruder"))
    echo.fail_with(1002)
    assert not [x for x in echo.received if x.opcode in (OP_TEXT, OP_BINARY)]


@pytest.mark.parametrize("op", [OP_PING, OP_PONG, OP_CLOSE])
def test_5_fragmented_control_frame_is_1002(echo, op):
    payload = close_payload(1000) if op == OP_CLOSE else b"frag"
    echo.send_batch((op, payload, {"fin": False}), (OP_CONT, b"rest"))
    echo.fail_with(1002, context=f"fragmented opcode {op:#x}: ")


def test_5_fragmented_message_byte_by_byte(echo):
    data = (build_frame(OP_TEXT, b"one ", fin=False) + build_frame(OP_PING, b"p")
            + build_frame(OP_CONT, b"two", fin=True))
    for i in range(len(data)):
        echo.send_raw(data[i:i + 1])
    f = echo.read_frame()
    assert f.opcode == OP_PONG and f.payload == b"p"
    assert echo.recv_text() == "one two"


# -- 6 UTF-8 -----------------------------------------------------------------------

SAMPLE = "κόσμε Hello-µ@ßöäüàá-UTF-8!! \U0001F600 \u20ac \u0800 \uffff \U0010ffff".encode()


def test_6_valid_multibyte_in_one_frame(echo):
    echo.send_text(SAMPLE)
    assert echo.recv_text().encode() == SAMPLE


def test_6_valid_text_split_at_every_byte(echo):
    for i in range(1, len(SAMPLE)):
        echo.send_frame(OP_TEXT, SAMPLE[:i], fin=False)
        echo.send_frame(OP_CONT, SAMPLE[i:], fin=True)
    for i in range(1, len(SAMPLE)):
        assert echo.recv_text().encode() == SAMPLE, f"split at {i}"


def test_6_valid_text_one_byte_per_fragment(echo):
    for i, b in enumerate(SAMPLE):
        echo.send_frame(OP_TEXT if i == 0 else OP_CONT, bytes([b]), fin=i == len(SAMPLE) - 1)
    assert echo.recv_text().encode() == SAMPLE


@pytest.mark.parametrize("text", [
    "\u007f".encode(), "\u0080".encode(), "\u07ff".encode(), "\ud7ff".encode(), "\ue000".encode(),
    "\ufffd".encode(), "\ufeff".encode(), "\U00010000".encode(), "\U0010ffff".encode(),
    b"\xef\xbf\xbe",  # U+FFFE (a noncharacter, valid UTF-8)
])
def test_6_boundary_code_points_valid(echo, text):
    echo.send_text(text)
    assert echo.recv_text().encode() == text


INVALID_UTF8 = [
    b"\x80",                      # lone continuation
    b"\xbf",
    b"\xc0\xaf",                  # overlong
    b"\xc1\xbf",
    b"\xe0\x80\xaf",              # overlong 3-byte
    b"\xf0\x80\x80\xaf",          # overlong 4-byte
    b"\xed\xa0\x80",              # surrogate U+D800
    b"\xed\xbf\xbf",              # surrogate U+DFFF
    b"\xf4\x90\x80\x80",          # > U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"\xc3\x28",                  # bad continuation
    b"Hello-\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    b"\xce\xba\xe1",               # truncated at the end of the message
    b"abc\xe1\xbd",
]


@pytest.mark.parametrize("bad", INVALID_UTF8, ids=[b.hex() for b in INVALID_UTF8])
def test_6_invalid_utf8_is_1007(echo, bad):
    echo.send_frame(OP_TEXT, bad)
    echo.fail_with(1007, context=f"text {bad!r}: ")
    assert not [x for x in echo.received if x.opcode == OP_TEXT]


@pytest.mark.parametrize("bad", INVALID_UTF8[:13], ids=[b.hex() for b in INVALID_UTF8[:13]])
def test_6_invalid_utf8_fragmented_fails_fast(echo, bad):
    """The invalid fragment is not the last: the close comes without the
    message being finished."""
    echo.send_batch((OP_TEXT, b"valid start ", {"fin": False}), (OP_CONT, bad, {"fin": False}))
    echo.expect_close(1007, timeout=3, context=f"fragment {bad!r}: ")


def test_6_invalid_utf8_split_across_fragments(echo):
    # U+D800 as ED | A0 80: each fragment alone could start something valid
    echo.send_batch((OP_TEXT, b"ok \xed", {"fin": False}), (OP_CONT, b"\xa0", {"fin": False}))
    echo.expect_close(1007, timeout=3)


def test_6_truncated_sequence_at_message_end_is_1007(echo):
    echo.send_batch((OP_TEXT, b"abc \xe2\x82", {"fin": False}), (OP_CONT, b""))
    echo.fail_with(1007)


def test_6_invalid_byte_fails_fast_within_a_frame(echo):
    """The frame declares 1000 bytes; only the first 20 (invalid at byte 5) are
    sent: the close must not wait for the rest of the frame."""
    key = b"\x01\x02\x03\x04"
    payload = b"abcde\xff" + b"x" * 994
    frame = build_frame(OP_TEXT, payload, mask_key=key)
    head_len = len(frame) - len(payload)
    echo.send_raw(frame[:head_len + 20])
    echo.expect_close(1007, timeout=3)


def test_6_invalid_utf8_in_binary_is_fine(echo):
    echo.send_binary(b"\xff\xfe\xc0\xaf")
    assert echo.recv_binary() == b"\xff\xfe\xc0\xaf"


# -- 7 close handling --------------------------------------------------------------

@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                                  3000, 3999, 4000, 4999])
def test_7_valid_close_codes_echoed(echo, code):
    echo.send_close(code, b"reason")
    f = echo.expect_close(code)
    assert f.code == code
    echo.assert_eof(3)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_7_invalid_close_codes_are_1002(echo, code):
    echo.send_close(code)
    echo.expect_close(1002, context=f"close code {code}: ")
    echo.assert_eof(3)


def test_7_close_payload_of_length_1_is_1002(echo):
    echo.send_frame(OP_CLOSE, b"\x03")
    echo.expect_close(1002)
    echo.assert_eof(3)


def test_7_close_with_invalid_utf8_reason_is_1007(echo):
    echo.send_close(1000, b"bad \xed\xa0\x80 reason")
    echo.expect_close(1007)
    echo.assert_eof(3)


def test_7_close_with_max_reason(echo):
    reason = b"r" * 123
    echo.send_close(1000, reason)
    echo.expect_close(1000)
    echo.assert_eof(3)


def test_7_close_with_126_byte_payload_is_1002(echo):
    echo.send_frame(OP_CLOSE, close_payload(1000, b"r" * 124))
    echo.expect_close(1002)
    echo.assert_eof(3)


def test_7_nothing_processed_after_close(echo):
    echo.send_batch((OP_CLOSE, close_payload(1000)), (OP_TEXT, b"after close"), (OP_PING, b"after close"))
    echo.expect_close(1000, allow_data=False)
    echo.assert_eof(3)
    assert not [x for x in echo.received if x.opcode in (OP_TEXT, OP_PONG)], echo.received


def test_7_close_in_the_middle_of_a_fragmented_message(echo):
    echo.send_batch((OP_TEXT, b"never ", {"fin": False}), (OP_CLOSE, close_payload(1000)))
    echo.expect_close(1000, allow_data=False)
    echo.assert_eof(3)


def test_7_unmasked_client_frame_is_1002(echo):
    echo.send_frame(OP_TEXT, b"unmasked", mask=False)
    echo.fail_with(1002)


def test_7_unmasked_close_is_1002(echo):
    echo.send_frame(OP_CLOSE, close_payload(1000), mask=False)
    echo.expect_close(1002)
    echo.assert_eof(3)


def test_7_unmasked_ping_is_1002(echo):
    echo.send_frame(OP_PING, b"x", mask=False)
    echo.fail_with(1002)
    assert not [x for x in echo.received if x.opcode == OP_PONG]
