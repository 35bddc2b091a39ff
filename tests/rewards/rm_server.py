#!/usr/bin/python3
"""rm_server.py — a reward-model HTTP service for testing quench's remote_rm
client, misbehaving on request. Loopback only. Prints its port on stdout,
then serves until killed or until --lifetime seconds pass.

POST / with {"prompt", "response", "label"}; the response text says what to do:
  ok:<x>                 200 {"reward": x}
  flaky500:<n>:<x>[:id]  500 for the first n requests with this exact text, then ok
  always500              500
  status:<code>          answer with that status code
  slow:<seconds>:<x>     sleep, then ok (use a delay past the client timeout)
  slowonce:<s>:<x>[:id]  sleep on the first request with this text only
  drop                   close the connection without answering
  droponce:<x>[:id]      drop the first request with this text, then ok
  garbage                200 with a body that is not JSON
  named:<x>:<y>          200 {"reward": x, "acc": y}
  number:<x>             200 with the bare JSON number x
Anything else is scored by --delay seconds of sleep and reward 1 (for
throughput runs). GET /stats returns {"requests": n, "connections": c,
"by_text": {text: count}}; c counts TCP connections accepted (this GET's too).
"""
import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
counts = {}
total = [0]
connections = [0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client can reuse connections
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        with lock:  # one handler per TCP connection: counts connection reuse
            connections[0] += 1

    def reply(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # headers and body in one write: two small writes meet the client's
        # delayed ACK and cost ~40 ms per request
        self._headers_buffer.append(b"\r\n" + data)
        self.flush_headers()

    def do_GET(self):
        with lock:
            self.reply(200, json.dumps({"requests": total[0], "connections": connections[0],
                                        "by_text": counts}))

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        try:
            req = json.loads(self.rfile.read(length))
            text = req["response"]
        except Exception:
            self.reply(400, '{"error": "bad request"}')
            return
        with lock:
            counts[text] = counts.get(text, 0) + 1
            total[0] += 1
            seen = counts[text]
        parts = text.split(":")
        kind = parts[0]
        if kind == "ok":
            self.reply(200, json.dumps({"reward": float(parts[1])}))
        elif kind == "flaky500":
            if seen <= int(parts[1]):
                self.reply(500, '{"error": "flaky"}')
            else:
                self.reply(200, json.dumps({"reward": float(parts[2])}))
        elif kind == "always500":
            self.reply(500, '{"error": "down"}')
        elif kind == "status":
            self.reply(int(parts[1]), '{"error": "as asked"}')
        elif kind == "slow":
            time.sleep(float(parts[1]))
            self.reply(200, json.dumps({"reward": float(parts[2])}))
        elif kind == "slowonce":
            if seen == 1:
                time.sleep(float(parts[1]))
            self.reply(200, json.dumps({"reward": float(parts[2])}))
        elif kind == "drop" or (kind == "droponce" and seen == 1):
            self.close_connection = True
            self.connection.shutdown(2)
        elif kind == "droponce":
            self.reply(200, json.dumps({"reward": float(parts[1])}))
        elif kind == "garbage":
            self.reply(200, "this is not json")
        elif kind == "named":
            self.reply(200, json.dumps({"reward": float(parts[1]), "acc": float(parts[2])}))
        elif kind == "number":
            self.reply(200, parts[1])
        else:
            if self.server.delay > 0:
                time.sleep(self.server.delay)
            self.reply(200, '{"reward": 1}')


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # listen backlog: many clients connect at once

    def handle_error(self, request, client_address):
        pass  # clients that time out and hang up are part of the tests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--lifetime", type=float, default=300.0)
    args = ap.parse_args()
    srv = Server(("127.0.0.1", args.port), Handler)
    srv.delay = args.delay
    print(srv.server_address[1], flush=True)
    threading.Timer(args.lifetime, srv.shutdown).start()
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
