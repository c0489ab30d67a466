#!/usr/bin/env python3
"""A product backend's endpoint for Tollgate's push notifications.

Tollgate POSTs each access change as JSON (payload version 1, see the
README) with `Tollgate-Signature: t=...,v1=...`, Stripe's own scheme keyed
with TOLLGATE_NOTIFY_SECRET. This receiver:

- verifies the signature with Stripe's own library
  (`stripe.WebhookSignature.verify_header`), 5 minutes' tolerance, and
  answers 400 to anything that fails;
- checks the payload's version-1 fields (later versions only add fields,
  so unknown ones are ignored);
- deduplicates on `id` (delivery is at least once) and answers 200 fast,
  so Tollgate does not retry;
- "applies" the change by printing one JSON line per new notification
  (a real backend would update its user's access flag here).

    pip install -r examples/python/requirements.txt
    TOLLGATE_NOTIFY_SECRET=... python3 examples/python/notification_receiver.py --port 8090
    # and run Tollgate with TOLLGATE_NOTIFY_URL=http://127.0.0.1:8090/ and the same secret

The first line printed is `listening on http://HOST:PORT/` (useful with
--port 0).
"""

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe

try:  # stripe >= 7 exports it at the top level
    SignatureVerificationError = stripe.SignatureVerificationError
except AttributeError:  # older releases
    SignatureVerificationError = stripe.error.SignatureVerificationError

TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 64 * 1024

# Payload version 1: every field and its type.
V1_FIELDS = {
    "id": int,
    "kind": str,
    "user_id": str,
    "customer_id": str,
    "subscription_id": str,
    "old_status": str,
    "new_status": str,
    "old_access": bool,
    "new_access": bool,
    "old_access_until": int,
    "new_access_until": int,
    "reason": str,
    "created_at_ms": int,
}
KINDS = {"ACCESS_RESTORED", "ACCESS_REVOKED", "ACCESS_CHANGED"}


def check_v1(payload):
    """Returns what is wrong with a version-1 payload, or None."""
    if not isinstance(payload, dict):
        return "not a JSON object"
    for name, kind in V1_FIELDS.items():
        value = payload.get(name)
        # bool is a subclass of int in Python: keep them apart.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"field {name} missing or not {kind.__name__}"
    if payload["kind"] not in KINDS:
        return f"unknown kind {payload['kind']}"
    return None


class Receiver(ThreadingHTTPServer):
    def __init__(self, address, secret):
        super().__init__(address, Handler)
        self.secret = secret
        self.seen = set()
        self.lock = threading.Lock()

    def apply(self, payload):
        """Where a real backend grants or revokes access."""
        print(json.dumps({"applied": True, **payload}, sort_keys=True), flush=True)


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return self.answer(413, {"error": "body too large"})
        body = self.rfile.read(length).decode("utf-8", errors="replace")
        header = self.headers.get("Tollgate-Signature", "")
        try:
            stripe.WebhookSignature.verify_header(
                body, header, self.server.secret, tolerance=TOLERANCE_SECONDS
            )
        except SignatureVerificationError as e:
            return self.answer(400, {"error": f"signature: {e}"})
        try:
            payload = json.loads(body)
        except ValueError:
            return self.answer(400, {"error": "body is not JSON"})
        problem = check_v1(payload)
        if problem:
            return self.answer(400, {"error": problem})
        with self.server.lock:
            duplicate = payload["id"] in self.server.seen
            self.server.seen.add(payload["id"])
        if not duplicate:
            self.server.apply(payload)
        return self.answer(200, {"received": True, "duplicate": duplicate})

    def log_message(self, format, *args):  # keep stdout for notifications
        sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090, help="0 picks a free port")
    parser.add_argument(
        "--secret",
        default=os.environ.get("TOLLGATE_NOTIFY_SECRET"),
        help="Tollgate's TOLLGATE_NOTIFY_SECRET (default: that environment variable)",
    )
    args = parser.parse_args()
    if not args.secret:
        parser.error("set --secret or TOLLGATE_NOTIFY_SECRET")
    server = Receiver((args.host, args.port), args.secret)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
