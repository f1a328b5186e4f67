"""Serves StateFun SDK functions as a StateFun HTTP endpoint with the standard library,
for the Python functions of the tests (greeter.py, inventory.py).

POST body = ToFunction bytes; 200 with FromFunction bytes, or 500 with the traceback.
Binds 127.0.0.1 and prints "listening on http://127.0.0.1:<port>" once it accepts requests;
with TLS_CERT and TLS_KEY (PEM files) in the environment it serves HTTPS instead and
prints "listening on https://127.0.0.1:<port>".
"""

import os
import ssl
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, the TLS handshake in the connection's thread, quiet access log."""

    protocol_version = "HTTP/1.1"

    def answer(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def setup(self):
        handshake(self.request)
        super().setup()

    def log_message(self, format, *args):
        pass  # requests are logged by their servers, failures always


def serve(handler, name, port=0, describe=None):
    """Serves `handler` (a statefun RequestReplyHandler) until interrupted.

    `describe(request, reply)`, when given, returns one log line per request (to stderr).
    """

    class Endpoint(Handler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            request = self.rfile.read(length)
            try:
                reply = handler.handle_sync(request)
            except Exception:
                text = traceback.format_exc()
                sys.stderr.write(f"{name}: request of {length} bytes failed:\n{text}")
                sys.stderr.flush()
                self.answer(500, "text/plain; charset=utf-8", text.encode("utf-8"))
                return
            if describe is not None:
                try:
                    sys.stderr.write(f"{name}: {describe(request, reply)}\n")
                except Exception as e:  # logging must never fail a request
                    sys.stderr.write(f"{name}: (could not describe request: {e})\n")
                sys.stderr.flush()
            self.answer(200, "application/octet-stream", reply)

    server = ThreadingHTTPServer(("127.0.0.1", port), Endpoint)
    server.daemon_threads = True
    scheme = "http"
    if os.environ.get("TLS_CERT"):
        use_tls(server, os.environ["TLS_CERT"], os.environ["TLS_KEY"])
        scheme = "https"
    print(f"listening on {scheme}://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def use_tls(server, cert, key):
    """Makes `server` accept TLS connections with the PEM files `cert` and `key`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    # The handshake runs in each connection's thread (see handshake), not in the accepting one.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)


def handshake(connection):
    """Completes the TLS handshake of an accepted connection (nothing for plain TCP)."""
    if isinstance(connection, ssl.SSLSocket):
        connection.do_handshake()
