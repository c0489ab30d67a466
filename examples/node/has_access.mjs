// A product backend asking Tollgate whether a user may use the product:
// a deadline on every attempt, one retry for UNAVAILABLE or
// DEADLINE_EXCEEDED only, fail open or closed as you choose when no answer
// comes, and the answer's detail logged. The same policy as
// examples/python/has_access.py.
//
//   npm ci --prefix examples/node
//   node examples/node/has_access.mjs --user-id alice [--feature export] [--addr 127.0.0.1:50051] [--deadline 0.3] [--on-error open|closed]
//
// Prints `allow` or `deny` and exits 0 or 1 accordingly.

import { fileURLToPath } from "node:url";
import path from "node:path";
import { parseArgs } from "node:util";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../proto");
const definition = protoLoader.loadSync("tollgate/v1/entitlements.proto", {
  includeDirs: [PROTO_DIR],
  keepCase: true, // user_id, has_access: the names in the proto
  enums: String, // reason as "REASON_ACTIVE"
  longs: Number,
  defaults: true,
});
const { Entitlements } = grpc.loadPackageDefinition(definition).tollgate.v1;

const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]);
const codeName = (code) => Object.keys(grpc.status).find((k) => grpc.status[k] === code);

function call(client, request, deadlineSeconds) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + deadlineSeconds * 1000);
    client.HasAccess(request, { deadline }, (err, answer) => (err ? reject(err) : resolve(answer)));
  });
}

/** True when the user may use the product now; `failOpen` when no answer comes. */
export async function mayUse(
  client,
  userId,
  { deadline = 0.3, failOpen = false, product = "", feature = "" } = {},
) {
  const request = { user_id: userId, product, feature };
  for (const attempt of [1, 2]) {
    try {
      const answer = await call(client, request, deadline);
      console.error(
        `INFO tollgate: user ${userId} ${answer.has_access ? "allowed" : "denied"}: ${answer.reason}, ${answer.detail}`,
      );
      return answer.has_access;
    } catch (err) {
      if (err.code === grpc.status.INVALID_ARGUMENT) {
        throw new Error(`tollgate refused the request: ${err.details}`);
      }
      if (attempt === 1 && RETRYABLE.has(err.code)) {
        console.error(`WARNING tollgate ${codeName(err.code)} (${err.details}); retrying once`);
        continue;
      }
      console.error(
        `ERROR tollgate gave no answer for user ${userId}: ${codeName(err.code)} (${err.details}); ` +
          `failing ${failOpen ? "open (allow)" : "closed (deny)"}`,
      );
      return failOpen;
    }
  }
}

const { values } = parseArgs({
  options: {
    addr: { type: "string", default: "127.0.0.1:50051" },
    "user-id": { type: "string" },
    product: { type: "string", default: "" },
    feature: { type: "string", default: "" },
    deadline: { type: "string", default: "0.3" },
    "on-error": { type: "string", default: "closed" },
  },
});
if (!values["user-id"] || !["open", "closed"].includes(values["on-error"])) {
  console.error("usage: has_access.mjs --user-id ID [--addr HOST:PORT] [--product P] [--feature F] [--deadline SECONDS] [--on-error open|closed]");
  process.exit(2);
}
const client = new Entitlements(values.addr, grpc.credentials.createInsecure());
const allowed = await mayUse(client, values["user-id"], {
  deadline: Number(values.deadline),
  failOpen: values["on-error"] === "open",
  product: values.product,
  feature: values.feature,
});
client.close();
console.log(allowed ? "allow" : "deny");
process.exit(allowed ? 0 : 1);
