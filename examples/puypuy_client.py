#!/usr/bin/env python3
"""A small client of the PuyPuy shipper's frame socket, in plain Python 3 (no dependencies).

It sends points the way the collector does and waits for the shipper's acknowledgement, so once
send() returns the shipper has delivered or spooled them. The byte layout is documented in
common/src/frame.rs: a 4-byte big-endian length, then a payload of fixed-width little-endian
integers, u64-length-prefixed strings and lists, u32 enum tags.

    ./puypuy_client.py /path/to/shipper.sock my_metric 42.5 [key=value ...]
"""
import socket
import struct
import sys
import time

PROTOCOL_VERSION = 1
STACK, RATE = 0, 1


def _string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _point(name, timestamp, value, check_type, style=STACK, tags=()):
    out = _string(name) + struct.pack("<Q", timestamp)
    if isinstance(value, int) and not isinstance(value, bool):
        out += struct.pack("<Iq", 0, value)      # Value::Int
    else:
        out += struct.pack("<Id", 1, float(value))  # Value::Float
    out += _string(check_type) + struct.pack("<I", style)
    out += struct.pack("<Q", len(tags))
    for k, v in tags:
        out += _string(k) + _string(v)
    return out


def encode_frame(sender, seq, points):
    """points: list of (name, timestamp, value, check_type, style, [(key, value), ...])."""
    payload = struct.pack("<H", PROTOCOL_VERSION) + _string(sender) + struct.pack("<Q", seq)
    payload += struct.pack("<Q", len(points))
    for p in points:
        payload += _point(*p)
    return struct.pack(">I", len(payload)) + payload


def _read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("shipper closed the connection")
        buf += chunk
    return buf


class Client:
    def __init__(self, path, sender="python-example", timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.sender = sender
        self.seq = 0

    def send(self, points):
        """Sends one frame and waits for its ack; returns the ack status (0 = delivered or spooled)."""
        self.seq += 1
        self.sock.sendall(encode_frame(self.sender, self.seq, points))
        (length,) = struct.unpack(">I", _read_exact(self.sock, 4))
        version, seq, status = struct.unpack("<HQB", _read_exact(self.sock, length))
        if version != PROTOCOL_VERSION or seq != self.seq:
            raise ValueError("unexpected ack: version %d seq %d" % (version, seq))
        return status

    def close(self):
        self.sock.close()


def main(argv):
    if len(argv) < 4:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    path, name, value = argv[1], argv[2], float(argv[3])
    tags = [tuple(t.split("=", 1)) for t in argv[4:]]
    client = Client(path)
    status = client.send([(name, int(time.time()), value, "python", STACK, tags)])
    client.close()
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
