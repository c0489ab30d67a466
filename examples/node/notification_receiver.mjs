// A product backend's endpoint for Tollgate's push notifications: verifies
// Tollgate-Signature with Stripe's own library (Stripe.webhooks.constructEvent,
// 5 minutes' tolerance), checks the payload-v1 fields, deduplicates on id
// and prints one JSON line per new notification. The same contract as
// examples/python/notification_receiver.py.
//
//   npm ci --prefix examples/node
//   TOLLGATE_NOTIFY_SECRET=... node examples/node/notification_receiver.mjs --port 8090
//
// The first line printed is `listening on http://HOST:PORT/`.

import http from "node:http";
import { parseArgs } from "node:util";
import Stripe from "stripe";

const TOLERANCE_SECONDS = 300;
const MAX_BODY_BYTES = 64 * 1024;
const V1_FIELDS = {
  id: "number", kind: "string", user_id: "string", customer_id: "string",
  subscription_id: "string", old_status: "string", new_status: "string",
  old_access: "boolean", new_access: "boolean", old_access_until: "number",
  new_access_until: "number", reason: "string", created_at_ms: "number",
};
const KINDS = new Set(["ACCESS_RESTORED", "ACCESS_REVOKED", "ACCESS_CHANGED"]);

function checkV1(payload) {
  if (payload === null || typeof payload !== "object") return "not a JSON object";
  for (const [name, type] of Object.entries(V1_FIELDS)) {
    if (typeof payload[name] !== type) return `field ${name} missing or not ${type}`;
  }
  return KINDS.has(payload.kind) ? null : `unknown kind ${payload.kind}`;
}

const { values } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8090" },
    secret: { type: "string", default: process.env.TOLLGATE_NOTIFY_SECRET },
  },
});
if (!values.secret) {
  console.error("set --secret or TOLLGATE_NOTIFY_SECRET");
  process.exit(2);
}

const seen = new Set();
const answer = (res, status, body) => {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
};

const server = http.createServer((req, res) => {
  if (req.method !== "POST") return answer(res, 405, { error: "POST only" });
  const chunks = [];
  let size = 0;
  req.on("data", (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) req.destroy();
    else chunks.push(chunk);
  });
  req.on("end", () => {
    const body = Buffer.concat(chunks); // the raw bytes: what was signed
    let payload;
    try {
      payload = Stripe.webhooks.constructEvent(
        body, req.headers["tollgate-signature"] ?? "", values.secret, TOLERANCE_SECONDS,
      );
    } catch (err) {
      return answer(res, 400, { error: `signature: ${err.message}` });
    }
    const problem = checkV1(payload);
    if (problem) return answer(res, 400, { error: problem });
    const duplicate = seen.has(payload.id);
    seen.add(payload.id);
    // Where a real backend grants or revokes access.
    if (!duplicate) console.log(JSON.stringify({ applied: true, ...payload }));
    return answer(res, 200, { received: true, duplicate });
  });
});

server.listen(Number(values.port), values.host, () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}/`);
});
