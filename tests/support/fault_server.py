#!/usr/bin/env python3
"""A file server for tests that misbehaves on request.

    fault_server.py --root DIR [--port 0] [--bind 127.0.0.1] [--parent-pid PID]

Serves the files under DIR over HTTP/1.1 the way a good static server does (GET and HEAD, one
byte range per request with 206 / 416 and Content-Range, a strong ETag, Accept-Ranges, If-Range),
except where a test has queued faults for a path: each request for that path takes the next fault
of its list, and once the list is empty the path is served normally again. Prints the port it
listens on (one line on stdout) once it accepts connections. Python 3 standard library only.

Control endpoints (used by modelfs::test::FaultServer; never logged, never faulted):
    PUT  /__control/faults?path=/P   body: JSON list of faults; replaces P's list
    PUT  /__control/headers?path=/P  body: JSON list of "Name: value"; extra headers for P
    GET  /__control/log              JSON list of every request so far, in arrival order
    GET  /__control/stats            {"in_flight": N, "peak_in_flight": M}: GET/HEAD requests
                                     being answered now, and the most at any moment
    POST /__control/reset            forgets faults, extra headers and the log

A fault is a JSON object with "kind" and its parameters:
    {"kind": "drop_after", "after_bytes": N}     headers, N body bytes, then the connection closes
    {"kind": "status", "status": S, "retry_after": R}   answers S (R < 0: no Retry-After)
    {"kind": "wrong_bytes"}                      the right length, every byte inverted
    {"kind": "stall", "seconds": T, "after_bytes": N}   headers and N body bytes, then silence for
                                                 T seconds, then the connection closes
    {"kind": "slow", "bytes_per_second": B}      the right bytes, at most B per second
    {"kind": "ignore_range"}                     a Range request gets 200 and the whole file
    {"kind": "redirect", "status": S, "location": URL}   answers S (302 when 0) with Location: URL
    {"kind": "content_length", "content_length": N}  200 announcing Content-Length N (any number,
                                                 2**62 too), then the file, then the connection
                                                 closes
    {"kind": "overlong", "after_bytes": N}       200 without Content-Length, the file and N more
                                                 bytes, then the connection closes
Optional "method": "GET" (or "HEAD") makes the fault apply to that method only; requests with
another method pass it by and leave it queued.
"""

import argparse
import email.utils
import http.server
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse

CONTROL = "/__control/"
INVERT = bytes(255 - i for i in range(256))


class State:
    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.lock = threading.Lock()
        self.faults = {}   # path -> list of fault dicts, next first
        self.headers = {}  # path -> list of "Name: value"
        self.log = []      # dicts: method, path, range, status, bytes, headers ("Name: value")
        self.in_flight = 0       # file requests being answered now
        self.peak_in_flight = 0  # the most at once since the start (or reset)

    def take_fault(self, path, method):
        with self.lock:
            queue = self.faults.get(path)
            if not queue:
                return None
            fault = queue[0]
            want = fault.get("method") or ""
            if want and want.upper() != method:
                return None
            queue.pop(0)
            return fault


def parse_range(header, size):
    """(start, end) inclusive, None for no usable Range (serve 200), or "416"."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m:
        # Multiple ranges or another unit: a server may ignore Range and send the whole file.
        return None
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            return "416"
        return (max(0, size - n), size - 1)
    start = int(first)
    if start >= size:
        return "416"
    end = size - 1 if last == "" else min(int(last), size - 1)
    if end < start:
        return None  # syntactically invalid: ignored, per RFC 9110
    return (start, end)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "modelfs-fault-server/1"

    def log_message(self, format, *args):  # the structured log replaces stderr chatter
        pass

    # --- control ------------------------------------------------------------------------------
    def _control(self):
        url = urllib.parse.urlsplit(self.path)
        what = url.path[len(CONTROL):]
        query = urllib.parse.parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        st = self.server.state
        try:
            if what == "faults" and self.command == "PUT":
                faults = json.loads(body or b"[]")
                with st.lock:
                    st.faults[query["path"][0]] = list(faults)
                return self._reply(204, b"")
            if what == "headers" and self.command == "PUT":
                headers = json.loads(body or b"[]")
                with st.lock:
                    st.headers[query["path"][0]] = list(headers)
                return self._reply(204, b"")
            if what == "log" and self.command == "GET":
                with st.lock:
                    data = json.dumps(st.log).encode()
                return self._reply(200, data, "application/json")
            if what == "stats" and self.command == "GET":
                with st.lock:
                    data = json.dumps({"in_flight": st.in_flight,
                                       "peak_in_flight": st.peak_in_flight}).encode()
                return self._reply(200, data, "application/json")
            if what == "reset" and self.command == "POST":
                with st.lock:
                    st.faults.clear()
                    st.headers.clear()
                    st.log.clear()
                    st.peak_in_flight = st.in_flight
                return self._reply(204, b"")
        except (ValueError, KeyError) as e:
            return self._reply(400, ("bad control request: %s\n" % e).encode())
        return self._reply(404, b"no such control endpoint\n")

    def _reply(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def do_PUT(self):
        if self.path.startswith(CONTROL):
            return self._control()
        self._reply(405, b"read-only\n")

    def do_POST(self):
        self.do_PUT()

    def do_GET(self):
        if self.path.startswith(CONTROL):
            return self._control()
        self._counted_serve()

    def do_HEAD(self):
        self._counted_serve()

    def _counted_serve(self):
        st = self.server.state
        with st.lock:
            st.in_flight += 1
            st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        try:
            self._serve()
        finally:
            with st.lock:
                st.in_flight -= 1

    # --- files --------------------------------------------------------------------------------
    def _serve(self):
        st = self.server.state
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        entry = {"method": self.command, "path": path,
                 "range": self.headers.get("Range") or "", "status": 0, "bytes": 0,
                 "headers": ["%s: %s" % (k, v) for k, v in self.headers.items()]}
        # Logged on arrival, so a test counts a request even if the fault ends it abruptly.
        with st.lock:
            st.log.append(entry)
            extra = list(st.headers.get(path, []))
        fault = st.take_fault(path, self.command)
        kind = fault.get("kind") if fault else None

        if kind == "status":
            status = int(fault.get("status", 500))
            entry["status"] = status
            body = ("injected %d\n" % status).encode()
            self.send_response(status)
            retry_after = int(fault.get("retry_after", -1))
            if retry_after >= 0:
                self.send_header("Retry-After", str(retry_after))
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return

        if kind == "redirect":
            status = int(fault.get("status") or 302)
            entry["status"] = status
            self.send_response(status)
            self.send_header("Location", fault.get("location", ""))
            for h in extra:
                name, _, value = h.partition(":")
                self.send_header(name.strip(), value.strip())
            self.send_header("Content-Length", "0")
            self.end_headers()
            return

        full = os.path.realpath(os.path.join(st.root, path.lstrip("/")))
        if not (full == st.root or full.startswith(st.root + os.sep)) or not os.path.isfile(full):
            entry["status"] = 404
            return self._reply(404, b"not found\n")

        stat = os.stat(full)
        size = stat.st_size
        etag = '"%x-%x"' % (int(stat.st_mtime), size)  # nginx's form: mtime-size
        lies = kind in ("content_length", "overlong")
        rng = None if kind == "ignore_range" or lies else parse_range(self.headers.get("Range"),
                                                                      size)
        if_range = self.headers.get("If-Range")
        if rng is not None and if_range is not None and if_range.strip() != etag:
            rng = None  # the file changed since the client's first part: send all of it

        def common_headers():
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
            self.send_header("Content-Type", "application/octet-stream")
            for h in extra:
                name, _, value = h.partition(":")
                self.send_header(name.strip(), value.strip())

        if rng == "416":
            entry["status"] = 416
            self.send_response(416)
            self.send_header("Content-Range", "bytes */%d" % size)
            self.send_header("Content-Length", "0")
            common_headers()
            self.end_headers()
            return

        if rng is None:
            start, end, status = 0, size - 1, 200
        else:
            (start, end), status = rng, 206
        length = end - start + 1 if size else 0
        entry["status"] = status
        self.send_response(status)
        common_headers()
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        if kind == "content_length":
            self.send_header("Content-Length", str(int(fault.get("content_length", 0))))
        elif kind == "overlong":
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            if lies:
                self.close_connection = True
            return
        self.wfile.flush()

        limit = length
        if kind in ("drop_after", "stall"):
            limit = min(length, int(fault.get("after_bytes", 0)))
        rate = int(fault.get("bytes_per_second", 0)) if kind == "slow" else 0
        began = time.monotonic()
        sent = 0
        with open(full, "rb") as f:
            f.seek(start)
            while sent < limit:
                n = min(64 * 1024, limit - sent)
                if rate > 0:
                    n = min(n, max(1, rate // 10))
                chunk = f.read(n)
                if not chunk:
                    break
                if kind == "wrong_bytes":
                    chunk = chunk.translate(INVERT)
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                entry["bytes"] = sent
                if rate > 0:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)

        if kind == "overlong":
            junk = b"\xee" * int(fault.get("after_bytes", 0))
            self.wfile.write(junk)
            entry["bytes"] = sent + len(junk)
        if lies:
            return self._abort()
        if kind == "stall":
            time.sleep(float(fault.get("seconds", 0)))
        if kind in ("drop_after", "stall") and sent < length:
            self._abort()

    def _abort(self):
        """Ends the connection mid-body, as a crashed server or a broken network would."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # A client that hangs up mid-body (a test cancelling a transfer) is normal here.
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)


def watch_parent(parent):
    """Exits when the process that started this one is gone, so no test leaves a server behind."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--parent-pid", type=int, default=0,
                    help="exit when this process (the one that started us) is gone")
    args = ap.parse_args()
    if not os.path.isdir(args.root):
        sys.exit("fault_server: no such folder: %s" % args.root)
    server = Server((args.bind, args.port), Handler)
    server.state = State(args.root)
    if args.parent_pid:
        threading.Thread(target=watch_parent, args=(args.parent_pid,), daemon=True).start()
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
