#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets (tcp/fuzz/seeds/<target>/ and
ws/fuzz/seeds/<target>/): a few small, valid inputs per target so a short smoke run starts
from the interesting paths (handshakes, options, frames) rather than from nothing.

Deterministic: running it again rewrites the same files. Run from anywhere:
    python3 deploy/fuzz-seeds.py
"""
import os
import shutil
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STACK_MAC = bytes([2, 0, 0, 0, 0, 1])
PEER_MAC = bytes([2, 0, 0, 0, 0, 2])
BCAST = b"\xff" * 6
# The addresses the tcp targets use: 198.18.0.1 (SRC / the interface) and 198.18.0.2.
A1 = bytes([198, 18, 0, 1])
A2 = bytes([198, 18, 0, 2])


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def eth(dst, src, ethertype, payload):
    return dst + src + struct.pack("!H", ethertype) + payload


def arp(op, sha, spa, tha, tpa):
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + spa + tha + tpa


def ipv4(src, dst, proto, payload, ttl=64, ident=1, flags_frag=0x4000, options=b""):
    ihl = 5 + len(options) // 4
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(payload), ident,
                      flags_frag, ttl, proto, 0, src, dst) + options
    c = csum(hdr)
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def tcp(src, dst, sport, dport, seq, ack, flags, window=65535, options=b"", payload=b""):
    while len(options) % 4:
        options += b"\x01"
    off = (20 + len(options)) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, window, 0, 0)
    seg = hdr + options + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(seg))
    c = csum(pseudo + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
OPT_SYN = (b"\x02\x04\x05\xb4"            # MSS 1460
           b"\x04\x02"                    # SACK permitted
           b"\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x00"  # timestamps
           b"\x01\x03\x03\x07")           # NOP, window scale 7
OPT_SACK = (b"\x01\x01\x08\x0a\x00\x00\x00\x02\x00\x00\x00\x01"
            b"\x01\x01\x05\x10" + struct.pack("!IIII", 2000, 3000, 4000, 5000))


def icmp(type_, code, rest, payload):
    body = struct.pack("!BBH", type_, code, 0) + rest + payload
    c = csum(body)
    return body[:2] + struct.pack("!H", c) + body[4:]


def tcp_segments():
    return {
        "syn": tcp(A1, A2, 40000, 80, 1000, 0, SYN, options=OPT_SYN),
        "synack": tcp(A1, A2, 80, 40000, 5000, 1001, SYN | ACK, options=OPT_SYN),
        "ack_sack": tcp(A1, A2, 40000, 80, 1001, 5001, ACK, options=OPT_SACK),
        "data": tcp(A1, A2, 40000, 80, 1001, 5001, ACK | PSH, payload=b"hello, sluice\n"),
        "fin": tcp(A1, A2, 40000, 80, 1015, 5001, FIN | ACK),
        "rst": tcp(A1, A2, 40000, 80, 1015, 0, RST),
        "bad_options": tcp(A1, A2, 1, 2, 3, 4, SYN, options=b"\x02\x09\xff\x03\x00\x05\x02"),
    }


def quoted_tcp():
    inner = ipv4(A2, A1, 6, tcp(A2, A1, 80, 40000, 1, 0, SYN, options=OPT_SYN))
    return inner[:28]


def icmp_messages():
    return {
        "echo_request": icmp(8, 0, struct.pack("!HH", 7, 1), b"ping payload 0123456789"),
        "echo_reply": icmp(0, 0, struct.pack("!HH", 7, 1), b"ping payload 0123456789"),
        "port_unreachable": icmp(3, 3, b"\0\0\0\0", quoted_tcp()),
        "frag_needed": icmp(3, 4, struct.pack("!HH", 0, 576), quoted_tcp()),
        "time_exceeded": icmp(11, 0, b"\0\0\0\0", quoted_tcp()),
    }


def tcp_targets():
    segs = tcp_segments()
    icmps = icmp_messages()
    arp_req = arp(1, PEER_MAC, A2, b"\0" * 6, A1)
    arp_rep = arp(2, PEER_MAC, A2, STACK_MAC, A1)
    ip_syn = ipv4(A2, A1, 6, tcp(A2, A1, 40000, 80, 1000, 0, SYN, options=OPT_SYN))
    ip_data = ipv4(A2, A1, 6, tcp(A2, A1, 40000, 80, 1001, 1, ACK | PSH, payload=b"abc"))
    ip_echo = ipv4(A2, A1, 1, icmps["echo_request"])
    ip_unreach = ipv4(A2, A1, 1, icmps["port_unreachable"])
    ip_opts = ipv4(A2, A1, 17, b"\0\x35\0\x35\0\x0c\0\0abcd", options=b"\x94\x04\0\0")
    ip_frag = ipv4(A2, A1, 6, b"fragment", flags_frag=0x2000)
    out = {}
    out["ethernet"] = {
        "arp_request": eth(BCAST, PEER_MAC, 0x0806, arp_req),
        "ipv4_syn": eth(STACK_MAC, PEER_MAC, 0x0800, ip_syn),
        "vlan": eth(STACK_MAC, PEER_MAC, 0x8100, b"\0\x05\x08\x00" + ip_echo),
        "short": eth(STACK_MAC, PEER_MAC, 0x86DD, b""),
    }
    out["arp"] = {"request": arp_req, "reply": arp_rep,
                  "bad_htype": b"\0\x06" + arp_req[2:], "gratuitous": arp(1, PEER_MAC, A2, BCAST, A2)}
    out["ipv4"] = {"tcp_syn": ip_syn, "icmp_echo": ip_echo, "options": ip_opts,
                   "fragment": ip_frag, "icmp_unreachable": ip_unreach}
    out["icmpv4"] = icmps
    # tcp_segment: the segment alone (checksum over 198.18.0.1 -> 198.18.0.2).
    out["tcp_segment"] = segs
    # checksum: byte strings of assorted lengths and alignments.
    out["checksum"] = {
        "odd": bytes(range(1, 32)),
        "ones": b"\xff" * 67,
        "header": ip_syn[:20],
        "mixed": bytes((i * 37 + 11) & 0xFF for i in range(301)),
    }

    # interface_receive: a flags byte, then frames each prefixed with a length byte.
    def frames(*fs):
        return b"".join(bytes([len(f)]) + f for f in fs)

    e_arp = eth(BCAST, PEER_MAC, 0x0806, arp_req)
    e_arp_rep = eth(STACK_MAC, PEER_MAC, 0x0806, arp_rep)
    e_echo = eth(STACK_MAC, PEER_MAC, 0x0800, ip_echo)
    e_syn = eth(STACK_MAC, PEER_MAC, 0x0800, ip_syn)
    e_data = eth(STACK_MAC, PEER_MAC, 0x0800, ip_data)
    e_unreach = eth(STACK_MAC, PEER_MAC, 0x0800, ip_unreach)
    e_opts = eth(STACK_MAC, PEER_MAC, 0x0800, ip_opts)
    out["interface_receive"] = {
        "arp_then_ping": b"\x00" + frames(e_arp, e_echo, e_arp_rep),
        "syn_rst": b"\x00" + frames(e_syn, e_data, e_arp_rep),
        "syn_icmp_policy": b"\x02" + frames(e_syn, e_unreach, e_opts),
        "no_verify_drop": b"\x05" + frames(e_echo, e_syn, e_syn, e_arp),
    }

    # stack_ops: flags, then operations (opcode byte: low 5 bits the op, bit 7 the side,
    # bit 6 a variant), as tcp/fuzz/fuzz_targets/stack_ops.rs reads them.
    S1 = 0x80

    def deliver(n):
        return bytes([0x00, S1] * n)

    handshake = (bytes([S1 | 11, 0, 4])          # side 1 listens on port 80, backlog 4
                 + bytes([13, 0])                # side 0 connects to port 80
                 + deliver(6)
                 + bytes([22, 10]) + deliver(4))  # time passes, deliver
    transfer = (bytes([14, 0]) + struct.pack("!H", 3000)   # side 0 sends 3000 bytes
                + deliver(8)
                + bytes([S1 | 15, 0]) + struct.pack("!H", 4000)  # side 1 reads
                + deliver(4)
                + bytes([S1 | 14, 0]) + struct.pack("!H", 500)   # side 1 answers
                + deliver(4) + bytes([15, 0]) + struct.pack("!H", 600))
    closing = (bytes([17, 0]) + deliver(4) + bytes([S1 | 18, 0]) + deliver(4)
               + bytes([22 | 0x40, 130]) + deliver(2))
    lossy = (bytes([14, 0]) + struct.pack("!H", 9000)
             + bytes([S1 | 6]) + deliver(2) + bytes([S1 | 8]) + deliver(2)
             + bytes([S1 | 7]) + bytes([S1 | 9, 0, 40, 0x55]) + deliver(6)
             + bytes([22, 60]) + deliver(6) + bytes([22 | 0x40, 3]) + deliver(6))
    out["stack_ops"] = {
        "handshake": b"\x00" + handshake,
        "transfer": b"\x00" + handshake + transfer,
        "close": b"\x00" + handshake + transfer + closing,
        "loss_no_checksums": b"\x01" + handshake + lossy + bytes([19, 0, 21, 0]),
        "small_mtu_plain": b"\x7e" + handshake + transfer + bytes([20 | 0x40, 0, 16, 0, 5]),
        "inject": b"\x00" + bytes([S1 | 11, 0, 1, 10]) + struct.pack("!H", len(e_syn)) + e_syn
        + deliver(4),
    }
    return out


def ws_frame(opcode, payload, fin=True, mask=b"\x37\xfa\x21\x3d", rsv1=False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        return head + mask + payload
    return head + payload


def deflate(data):
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def ws_targets():
    req = (b"GET /chat HTTP/1.1\r\nHost: 198.18.0.2:8080\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n")
    resp = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n")
    out = {}
    out["handshake"] = {
        "request": req + b"\r\n",
        "request_deflate_protocol": req + b"Sec-WebSocket-Protocol: chat, superchat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        b"Origin: http://198.18.0.1\r\n\r\n",
        "response": resp + b"Sec-WebSocket-Protocol: chat\r\n\r\n",
        "response_deflate": resp + b"Sec-WebSocket-Extensions: permessage-deflate; "
        b"server_no_context_takeover\r\n\r\n",
        "bad_version": req.replace(b"13", b"8") + b"\r\n",
    }
    # connection: a flags byte (bit 0 client role, bit 1 deflate, bits 2-7 the read step),
    # then the bytes the peer sends.
    text = ws_frame(1, b"Hello, Sluice!")
    binary = ws_frame(2, bytes(range(200)))
    ping = ws_frame(9, b"ping")
    close = ws_frame(8, struct.pack("!H", 1000) + b"bye")
    frag = ws_frame(1, b"frag", fin=False) + ws_frame(9, b"") + ws_frame(0, b"mented")
    big = ws_frame(2, b"x" * 1500)
    # A 64-bit length field (not minimal: a protocol error the parser must report).
    long_len = bytes([0x82, 0xFF]) + struct.pack("!Q", 4) + b"\x01\x02\x03\x04" + b"abcd"
    comp = ws_frame(1, deflate(b"compressed " * 20), rsv1=True)
    out["connection"] = {
        "server_text_close": bytes([0x00]) + text + ping + close,
        "server_step_7": bytes([7 << 2]) + text + binary + frag + close,
        "server_big": bytes([63 << 2]) + big + close,
        "server_long_length": bytes([0x00]) + long_len + close,
        "server_deflate": bytes([0x02 | (16 << 2)]) + comp + text + close,
        "client_unmasked": bytes([0x01 | (5 << 2)]) + ws_frame(1, b"from server", mask=b"")
        + ws_frame(8, struct.pack("!H", 1001), mask=b""),
        "server_bad_utf8": bytes([0x00]) + ws_frame(1, b"\xc3\x28 bad") + close,
    }
    return out


def write(crate, targets):
    base = os.path.join(ROOT, crate, "fuzz", "seeds")
    for target, seeds in targets.items():
        d = os.path.join(base, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    write("tcp", tcp_targets())
    write("ws", ws_targets())
