#!/usr/bin/env python3
"""Writes the hand-made seed corpus of every fuzz target into fuzz/seeds/.

Run from anywhere: `python3 fuzz/seeds/make_seeds.py`. The output is
deterministic; the files are committed, this script is how they were made.

- envelope/: whole Stripe events (JSON). The objects are Stripe's own
  fixtures from tests/fixtures/stripe/ (see NOTICE.md here), wrapped in the
  event envelope Stripe sends, in both API shapes.
- signature/, classify/, decide/: the byte layouts their targets document
  at the top of fuzz/fuzz_targets/<target>.rs, encoded here by hand.
"""

import hashlib
import hmac
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent.parent / "tests" / "fixtures" / "stripe"


def write(target, name, data):
    d = HERE / target
    d.mkdir(exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def fixture(name):
    return json.loads((FIXTURES / name).read_text())


def i64(v):
    return struct.pack("<q", v)


def u64(v):
    return struct.pack("<Q", v)


def u32(v):
    return struct.pack("<I", v)


I64_MIN, I64_MAX, U64_MAX = -(2**63), 2**63 - 1, 2**64 - 1

# --- envelope: real Stripe-shaped events -----------------------------------


def event(event_type, obj, created=1721954054, api_version="2025-03-31.basil", **extra):
    ev = {
        "id": "evt_1PgcWfB7WZ01zgkW0Ux4yB3X",
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    ev.update(extra)
    return json.dumps(ev, indent=2, sort_keys=True) + "\n"


def acacia_subscription():
    sub = fixture("subscription.json")
    end = sub["items"]["data"][0].pop("current_period_end")
    sub["current_period_end"] = end
    sub["current_period_start"] = sub["items"]["data"][0].pop("current_period_start", end - 2592000)
    sub["metadata"] = {"user_id": "user_42"}
    return sub


def acacia_invoice():
    inv = fixture("invoice.json")
    inv["subscription"] = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
    inv.pop("parent", None)
    for line in inv["lines"]["data"]:
        line["subscription"] = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
        line.pop("parent", None)
    return inv


def envelope_seeds():
    write("envelope", "plan_created.json", (FIXTURES / "event.json").read_bytes())
    write("envelope", "stripe_dotnet_test_vector.json", (FIXTURES / "event_test_signature.json").read_bytes())
    write("envelope", "checkout_session_completed.json", event("checkout.session.completed", fixture("checkout_session.json")))
    write("envelope", "subscription_updated_basil.json", event("customer.subscription.updated", fixture("subscription.json")))
    past_due = fixture("subscription.json")
    past_due["status"] = "past_due"
    past_due["metadata"] = {"user_id": "user_42"}
    write("envelope", "subscription_past_due_basil.json", event("customer.subscription.updated", past_due))
    write("envelope", "subscription_created_acacia.json",
          event("customer.subscription.created", acacia_subscription(), api_version="2025-02-24.acacia"))
    write("envelope", "invoice_paid_basil.json", event("invoice.paid", fixture("invoice.json")))
    write("envelope", "invoice_paid_acacia.json",
          event("invoice.payment_succeeded", acacia_invoice(), api_version="2025-02-24.acacia"))
    write("envelope", "invoice_payment_failed.json", event("invoice.payment_failed", fixture("invoice.json")))
    customer = fixture("customer.json")
    customer["metadata"] = {"user_id": "user_42"}
    write("envelope", "customer_updated.json", event("customer.updated", customer))
    # Envelope edges: no data at all, huge created, odd types.
    write("envelope", "no_data.json", '{"id":"evt_1","type":"invoice.paid","created":1}')
    # Fuzz finding: a float serde_json reads one ulp off by default, so the
    # event is not the same once written out and read again.
    write("envelope", "float_reserialised.json",
          '{"id":"evt_1","type":"invoice.paid","created":1,"data":{"object":{"subtotal":2.060319e117}}}')
    write("envelope", "created_i64_max.json",
          '{"id":"evt_1","type":"customer.subscription.deleted","created":9223372036854775807,"data":{"object":{"object":"subscription"}}}')


# --- signature: now, tolerance, t, header \n body --------------------------

SECRET = "whsec_fuzz_primary"
PREVIOUS = "whsec_fuzz_previous"


def sign(secret, t, body):
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def sig(now, tolerance, t, header, body):
    head = i64(now) + u64(tolerance) + i64(t)
    if header is None:
        return head + body
    return head + header.encode() + b"\n" + body


def signature_seeds():
    vector = (FIXTURES / "event_test_signature.json").read_bytes()
    t = 1533204620
    v = "2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7"
    assert sign("webhook_secret", t, vector) == v
    # Stripe's own vector: well formed, but signed with another secret.
    write("signature", "stripe_vector", sig(t + 100, 300, t, f"t={t},v1={v}", vector))
    body = (FIXTURES / "event.json").read_bytes()
    good = sign(SECRET, t, body)
    old = sign(PREVIOUS, t, body)
    write("signature", "valid", sig(t, 300, t, f"t={t},v1={good}", body))
    write("signature", "rotation", sig(t + 5, 300, t, f"t={t},v1={old},v1={good},v0={good}", body))
    write("signature", "outside_tolerance", sig(t + 301, 300, t, f"t={t},v1={good}", body))
    write("signature", "future_timestamp", sig(t - 301, 300, t, f"t={t},v1={good}", body))
    write("signature", "zero_tolerance", sig(t, 0, t, f" t={t} , v1={good} ,", body))
    write("signature", "malformed", sig(t, 300, t, "t=abc,v1=zz,v1=,=,t", body))
    write("signature", "no_header", sig(t, 300, t, None, b'{"id":"evt_1"}'))
    write("signature", "empty_body", sig(0, 0, 0, f"t=0,v1={sign(SECRET, 0, b'')}", b""))
    big = sign(SECRET, I64_MAX, b"{}")
    write("signature", "extremes", sig(I64_MIN, U64_MAX, I64_MAX, f"t={I64_MAX},v1={big}", b"{}"))
    write("signature", "negative_t", sig(-1, 1, -1, f"t=-1,v1={sign(SECRET, -1, body)}", body))


# --- classify: type byte, created, edits, api version ----------------------
# HANDLED_TYPES order, value kinds and key lists: fuzz_targets/classify.rs.

TYPES = [
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "customer.created",
    "customer.updated",
    "product.updated",
]
SUB_PATHS = [
    "object", "id", "customer", "customer.id", "status", "current_period_end",
    "trial_end", "cancel_at_period_end", "metadata", "metadata.user_id", "items",
    "items.data", "items.data.0", "items.data.0.current_period_end",
    "items.data.0.price", "items.data.0.price.id", "items.data.0.price.product",
    "items.data.0.price.lookup_key", "items.data.0.plan.id",
    "items.data.1.current_period_end", "items.data.1.price.id",
]
INVOICE_PATHS = [
    "object", "customer", "customer.id", "subscription", "parent",
    "parent.subscription_details", "parent.subscription_details.subscription",
    "lines", "lines.data", "lines.data.0", "lines.data.0.period.end",
    "lines.data.0.subscription",
    "lines.data.0.parent.subscription_item_details.subscription",
    "lines.data.1.period.end", "lines.data.1.subscription",
]
CUSTOMER_PATHS = ["object", "id", "metadata", "metadata.user_id"]
WORDS = [
    "", "subscription", "subscription_item", "invoice", "customer",
    "checkout.session", "sub_fuzz", "cus_fuzz", "u_fuzz", "price_fuzz",
    "prod_fuzz", "incomplete", "incomplete_expired", "trialing", "active",
    "past_due", "canceled", "unpaid", "paused", "ACTIVE", "active ", "\0", "é",
]
EXTREMES = [I64_MIN, I64_MIN + 1, -86400, -1, 0, 1, 946684800, 4102444800,
            253402300799, 253402300800, I64_MAX - 1, I64_MAX]
API = {None: 0, "acacia": 1, "basil": 2}


def word(w):  # value kind 6, a listed word
    return bytes([6, 1, WORDS.index(w)])


def int_value(v):  # value kind 2
    return bytes([2]) + i64(v)


def extreme(v):  # value kind 3
    return bytes([3, EXTREMES.index(v)])


def classify(event_type, edits=(), created=1721954054, api=None, paths=SUB_PATHS):
    out = bytes([TYPES.index(event_type)]) + i64(created)
    for path, value in edits:
        out += bytes([1, paths.index(path)])
        # ratio(1, 4): a byte of 0 removes the key, 1 sets it.
        out += bytes([0]) if value is None else bytes([1]) + value
    return out + bytes([0, API[api]])


def classify_seeds():
    write("classify", "checkout_completed", classify("checkout.session.completed"))
    write("classify", "subscription_updated", classify("customer.subscription.updated"))
    write("classify", "subscription_created_trialing", classify(
        "customer.subscription.created",
        [("status", word("trialing")), ("trial_end", int_value(1722558854))]))
    write("classify", "subscription_past_due_linked", classify(
        "customer.subscription.updated",
        [("status", word("past_due")), ("metadata.user_id", word("u_fuzz"))], api="basil"))
    write("classify", "subscription_acacia", classify(
        "customer.subscription.updated",
        [("items.data.0.current_period_end", None),
         ("current_period_end", int_value(1724632454))], api="acacia"))
    write("classify", "subscription_deleted_extremes", classify(
        "customer.subscription.deleted",
        [("status", word("canceled")), ("current_period_end", extreme(I64_MAX)),
         ("items.data.1.current_period_end", extreme(I64_MIN))], created=-1))
    write("classify", "subscription_bad_status", classify(
        "customer.subscription.paused", [("status", word("ACTIVE"))]))
    write("classify", "invoice_paid_basil", classify("invoice.paid", paths=INVOICE_PATHS))
    write("classify", "invoice_paid_acacia", classify(
        "invoice.payment_succeeded",
        [("parent", None), ("subscription", word("sub_fuzz")),
         ("lines.data.0.subscription", word("sub_fuzz"))], api="acacia", paths=INVOICE_PATHS))
    write("classify", "invoice_failed", classify("invoice.payment_failed", paths=INVOICE_PATHS))
    write("classify", "customer_linked", classify(
        "customer.updated", [("metadata.user_id", word("u_fuzz"))], paths=CUSTOMER_PATHS))


# --- decide: now, durations, product, records -------------------------------
# Layout: fuzz_targets/decide.rs. Times: kind byte 0 = now + i32 (LE),
# 1 = now, 2 = any i64 (LE), 3 = MIN, 4 = MAX, 5 = 0.

SANE_MIN = 946684800
STATUSES = ["incomplete", "incomplete_expired", "trialing", "active",
            "past_due", "canceled", "unpaid", "paused"]
DAY = 86400


def now_sane(t):
    return bytes([0]) + struct.pack(">I", t - SANE_MIN)


def secs(s):
    return bytes([0]) + u32(s)


def near(delta):
    return bytes([0]) + struct.pack("<i", delta)


NOW, ZERO, TMAX, TMIN = bytes([1]), bytes([5]), bytes([4]), bytes([3])
NONE = bytes([0])


def some(t):
    return bytes([1]) + t


def record(status, period_end=NONE, paid_through=NONE, trial_end=NONE, cancel=0,
           past_due_since=NONE, items=(), created=near(-10 * DAY),
           verified=near(-10 * DAY), hold=None):
    out = bytes([8 if status is None else STATUSES.index(status)])
    out += bytes([len(items)])
    for price, product, lookup in items:
        out += bytes([price, product, lookup])
    out += period_end + paid_through + trial_end + bytes([cancel]) + past_due_since
    out += created + verified
    out += NONE if hold is None else bytes([1]) + i64(hold)
    return out


def decide(records, now=now_sane(1800000000), grace=secs(7 * DAY),
           stale_grace=secs(DAY), stale_after=secs(900), product=0):
    out = now + grace + stale_grace + stale_after + bytes([product, len(records)])
    return out + b"".join(records)


def decide_seeds():
    write("decide", "active", decide([record("active", some(near(DAY)))]))
    write("decide", "past_due_grace_over_stale", decide(
        [record("past_due", some(near(DAY)), past_due_since=some(near(-8 * DAY)),
                verified=near(-DAY))]))
    write("decide", "canceled_on_hold", decide(
        [record("canceled", some(near(DAY)), hold=7)]))
    write("decide", "many_records_product", decide(
        [record("trialing", some(near(-5)), trial_end=some(near(-5)), items=[(0, 1, 0)]),
         record("active", some(near(-1)), paid_through=some(near(30 * DAY)), items=[(1, 2, 1)]),
         record(None, paid_through=some(near(DAY))),
         record("unpaid", some(NOW), items=[(0, 1, 1)]),
         record("incomplete", some(NOW))], product=1))
    write("decide", "edges_at_now", decide(
        [record("active", some(NOW)), record("trialing", some(NOW), trial_end=some(NOW)),
         record("past_due", some(NOW), past_due_since=some(near(-7 * DAY)))]))
    write("decide", "extremes_max", decide(
        [record("active", some(TMAX), paid_through=some(TMIN), created=TMAX, verified=TMIN),
         record("past_due", some(TMAX), past_due_since=some(TMAX))],
        now=bytes([3]), grace=bytes([2]), stale_grace=bytes([2]), stale_after=bytes([2])))
    write("decide", "extremes_min", decide(
        [record("active", some(TMIN), created=TMIN, verified=TMAX),
         record("unpaid", some(ZERO), created=TMIN),
         record("past_due", past_due_since=some(TMIN))],
        now=bytes([2]), grace=bytes([3]), stale_grace=bytes([2]), stale_after=bytes([3])))


if __name__ == "__main__":
    envelope_seeds()
    signature_seeds()
    classify_seeds()
    decide_seeds()
