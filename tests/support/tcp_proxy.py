#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 for failure injection: the S3 server "stops" for one test when the
test kills this proxy (every connection through it is reset, new ones are refused), and "comes
back" when the test starts a new proxy on the same port. Other tests keep using the server.

    tcp_proxy.py LISTEN_PORT TARGET_PORT [--rate BYTES_PER_SECOND]

LISTEN_PORT 0 picks a free port. Prints "port N" on stdout once it accepts connections. --rate
slows the client-to-server direction (uploads), so a test can kill it in the middle of one.
"""
import socket
import sys
import threading
import time


def pump(src, dst, rate):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if rate:
                time.sleep(len(data) / rate)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    args = sys.argv[1:]
    rate = 0
    if "--rate" in args:
        i = args.index("--rate")
        rate = int(args[i + 1])
        del args[i:i + 2]
    listen_port, target_port = int(args[0]), int(args[1])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(64)
    print("port", srv.getsockname()[1], flush=True)
    while True:
        client, _ = srv.accept()
        try:
            server = socket.create_connection(("127.0.0.1", target_port))
        except OSError:
            client.close()
            continue
        # The kernel resets both sides when this process is killed.
        threading.Thread(target=pump, args=(client, server, rate), daemon=True).start()
        threading.Thread(target=pump, args=(server, client, 0), daemon=True).start()


if __name__ == "__main__":
    main()
