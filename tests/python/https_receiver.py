"""An HTTPS webhook receiver, Python's standard library only: serves TLS with the certificate
and key it is given on 127.0.0.1 (a free port, printed as `port=N`), and appends each POST's
path and body to a file, one JSON line each. The test reads that file.

usage: https_receiver.py CERT KEY OUT
"""

import http.server
import json
import ssl
import sys


def main() -> None:
    cert, key, out = sys.argv[1:4]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the handler's name is http.server's)
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode("utf-8", "replace")
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps({"path": self.path, "body": body}) + "\n")
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"port={server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
