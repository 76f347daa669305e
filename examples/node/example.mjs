// Sticky Calls from Node.js 18 or newer, no packages: the built-in fetch.
//
// A new caller, the end of their call, the same caller recognised on their next call,
// and what an error looks like. Exits non-zero on any unexpected answer.
//
//   STICKY_URL=http://localhost:8080 STICKY_API_KEY=sc_... node example.mjs

const BASE_URL = (process.env.STICKY_URL || "http://localhost:8080").replace(/\/+$/, "");
const API_KEY = process.env.STICKY_API_KEY;
if (!API_KEY) fail("set STICKY_API_KEY to an API key of your Sticky Calls server");

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

// POSTs JSON; returns the HTTP status and the decoded JSON answer (errors are JSON too).
async function post(path, body) {
  const response = await fetch(BASE_URL + path, {
    method: "POST",
    headers: { Authorization: `Bearer ${API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: response.status, answer: await response.json() };
}

// The same, but anything other than 200 is a failure.
async function postOk(path, body) {
  const { status, answer } = await post(path, body);
  if (status !== 200) fail(`POST ${path} answered ${status}: ${JSON.stringify(answer)}`);
  return answer;
}

// Unique per run, so runs never see each other's callers.
const run = String(Math.floor(Math.random() * 1_000_000)).padStart(6, "0");
const call1 = `example-node-${run}-1`;
const call2 = `example-node-${run}-2`;
const customerRef = `cust_example_${run}`;
const phone = `+14155${run}`; // +1 415 5xx xxxx, in E.164
const phoneAsUri = `tel:+1-415-5${run.slice(0, 2)}-${run.slice(2)}`; // as a SIP platform writes it

// 1. A call from a number never seen before: band "low", treat the caller as new.
let start = await postOk("/v1/calls/start", {
  call_id: call1, identity_hints: { ani: phone }, platform: "generic",
});
console.log(`1. start ${call1} from ${phone}: band=${start.band} action=${start.recommended_action}`);
if (start.band !== "low" || start.customer_ref !== null) {
  fail(`a new number should be band low with no customer_ref: ${JSON.stringify(start)}`);
}

// 2. The call ends: who it was, what it was about, and what to remember.
const end = await postOk("/v1/calls/end", {
  call_id: call1, customer_ref: customerRef,
  summary: "Asked to upgrade to the gold plan; waiting for a quote.",
  intent: "plan_upgrade", intent_status: "open",
  variables: { name: "Ada Lovelace", plan: "gold" },
});
console.log(`2. end ${call1}: customer_ref=${end.customer_ref}`);
if (end.customer_ref !== customerRef) fail(`the end should link ${customerRef}: ${JSON.stringify(end)}`);

// 3. The same number calls again (written another way): recognised, band "high".
start = await postOk("/v1/calls/start", { call_id: call2, identity_hints: { ani: phoneAsUri } });
console.log(`3. start ${call2} from ${phoneAsUri}: band=${start.band} ` +
  `confidence=${start.confidence} customer_ref=${start.customer_ref}`);
if (start.band !== "high" || start.customer_ref !== customerRef) {
  fail(`the caller should be recognised as ${customerRef} with band high: ${JSON.stringify(start)}`);
}
const { variables, recent_calls: recentCalls, open_intents: openIntents } = start.context;
if (variables.plan !== "gold") fail(`the saved plan should be gold: ${JSON.stringify(start)}`);
// What an agent greets with: the saved variables, the last call's summary, what is still open.
console.log(`   greet ${variables.name} (${variables.plan} plan); last call: ${recentCalls[0].summary} ` +
  `Open: ${openIntents.map((intent) => intent.intent).join(", ")}`);

// 4. A mistake: intent_status is "open" or "resolved", not "closed". Every error is JSON:
//    {"error": {"code": "...", "message": "...", "field": "...", "request_id": "..."}}
const { status, answer } = await post("/v1/calls/end", {
  call_id: call2, intent: "plan_upgrade", intent_status: "closed",
});
const error = answer.error ?? {};
console.log(`4. bad end: HTTP ${status} code=${error.code} field=${error.field} (${error.message})`);
if (status !== 422 || error.code !== "invalid_value" || error.field !== "intent_status") {
  fail(`expected 422 invalid_value on intent_status, got ${status}: ${JSON.stringify(answer)}`);
}

// 5. The same end, fixed: the upgrade is done, so the intent leaves the open list.
await postOk("/v1/calls/end", { call_id: call2, intent: "plan_upgrade", intent_status: "resolved" });
console.log(`5. end ${call2}: plan_upgrade resolved`);
console.log("OK");
