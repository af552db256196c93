"""TCP → Unix socket relay, run inside a run's forwarder container (network `none`).

    python3 relay.py <port> <socket path>

Listens on 127.0.0.1:<port> in the forwarder's network namespace, which the algorithm
container shares, and copies each connection to the node proxy's Unix socket. It runs
from the base image with the standard library only, so it needs nothing installed.
"""

import socket
import sys
import threading


def pump(source, target):
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(client, path):
    with client:
        try:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(path)
        except OSError as exc:
            print(f"relay: the node proxy does not answer: {exc}", flush=True)
            return
        with upstream:
            back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
            back.start()
            pump(client, upstream)
            back.join()


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    print("relay: ready", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, path), daemon=True).start()


if __name__ == "__main__":
    main()
