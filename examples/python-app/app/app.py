"""A small web app on Python's standard library only: a greeting at /,
a visit counter at /count and a health check at /healthz, on $PORT."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GREETING = os.environ.get("GREETING", "hello from python")
_lock = threading.Lock()
_visits = 0


class Handler(BaseHTTPRequestHandler):
    server_version = "python-app/1.0"

    def do_GET(self):
        global _visits
        if self.path == "/healthz":
            self.reply(200, "text/plain", b"ok\n")
        elif self.path == "/count":
            with _lock:
                _visits += 1
                body = json.dumps({"visits": _visits}).encode() + b"\n"
            self.reply(200, "application/json", body)
        elif self.path == "/":
            self.reply(200, "text/plain", (GREETING + "\n").encode())
        else:
            self.reply(404, "text/plain", b"not found\n")

    def reply(self, status, kind, body):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        if self.path != "/healthz":  # checked every few seconds: not news
            super().log_request(code, size)

    def log_message(self, fmt, *args):
        # One line per request on stdout (the instance's log), not stderr.
        print("%s %s" % (self.address_string(), fmt % args), flush=True)


def main():
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print("listening on :%d" % port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
