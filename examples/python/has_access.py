#!/usr/bin/env python3
"""A product backend asking Tollgate whether a user may use the product.

What a real caller should do, in one function (`may_use`):

- a deadline on every call (HasAccess answers in well under a millisecond
  from its cache; a call that takes longer is a network or server problem);
- one retry, only for UNAVAILABLE and DEADLINE_EXCEEDED (a new connection
  or a busy moment), never for INVALID_ARGUMENT (a bug in the caller);
- a policy for when no answer comes: fail *closed* (deny) or fail *open*
  (allow), your choice per feature;
- the answer's `detail` logged, so support can see why access was denied.

Stubs are generated from proto/ at start with grpcio-tools, into a
temporary directory (nothing generated is checked in).

    pip install -r examples/python/requirements.txt
    python3 examples/python/has_access.py --user-id alice
    python3 examples/python/has_access.py --user-id alice --deadline 0.2 --on-error open

Prints `allow` or `deny` and exits 0 or 1 accordingly.
"""

import argparse
import logging
import pathlib
import shutil
import sys
import tempfile

import grpc

log = logging.getLogger("tollgate-example")

PROTO_DIR = pathlib.Path(__file__).resolve().parents[2] / "proto"


def load_stubs():
    """Generates the Python stubs for entitlements.proto and imports them."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="tollgate-stubs-")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "tollgate" / "v1" / "entitlements.proto"),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed on {PROTO_DIR}")
    sys.path.insert(0, out)
    try:
        from tollgate.v1 import entitlements_pb2, entitlements_pb2_grpc
    finally:
        # Imported modules live on in memory; the files are not needed.
        sys.path.remove(out)
        shutil.rmtree(out, ignore_errors=True)
    return entitlements_pb2, entitlements_pb2_grpc


pb, rpc = load_stubs()

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def may_use(stub, user_id, *, deadline=0.3, fail_open=False, product="", feature=""):
    """True when the user may use the product now.

    When Tollgate gives no answer (after one retry), returns `fail_open`.
    Raises ValueError for a request Tollgate refuses (a caller bug).
    """
    request = pb.HasAccessRequest(user_id=user_id, product=product, feature=feature)
    for attempt in (1, 2):
        try:
            answer = stub.HasAccess(request, timeout=deadline)
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise ValueError(f"tollgate refused the request: {e.details()}") from e
            if attempt == 1 and code in RETRYABLE:
                log.warning("tollgate %s (%s); retrying once", code.name, e.details())
                continue
            log.error(
                "tollgate gave no answer for user %s: %s (%s); failing %s",
                user_id,
                code.name,
                e.details(),
                "open (allow)" if fail_open else "closed (deny)",
            )
            return fail_open
        log.info(
            "tollgate: user %s %s: %s, %s",
            user_id,
            "allowed" if answer.has_access else "denied",
            pb.Reason.Name(answer.reason),
            answer.detail,
        )
        return answer.has_access
    raise AssertionError("unreachable")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051", help="Tollgate's gRPC HOST:PORT")
    parser.add_argument("--user-id", required=True, help="the product's user id")
    parser.add_argument("--product", default="", help="a Stripe product id or price lookup_key")
    parser.add_argument(
        "--feature", default="", help="a Stripe Entitlements feature lookup_key (e.g. export)"
    )
    parser.add_argument(
        "--deadline", type=float, default=0.3, help="seconds each attempt may take (default 0.3)"
    )
    parser.add_argument(
        "--on-error",
        choices=["open", "closed"],
        default="closed",
        help="when no answer comes: allow (open) or deny (closed, the default)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    with grpc.insecure_channel(args.addr) as channel:
        stub = rpc.EntitlementsStub(channel)
        allowed = may_use(
            stub,
            args.user_id,
            deadline=args.deadline,
            fail_open=args.on_error == "open",
            product=args.product,
            feature=args.feature,
        )
    print("allow" if allowed else "deny")
    return 0 if allowed else 1


if __name__ == "__main__":
    sys.exit(main())
