#!/usr/bin/env bash
# Sticky Calls with cURL (and jq to read the answers).
#
# A new caller, the end of their call, the same caller recognised on their next call,
# and what an error looks like. Exits non-zero on any unexpected answer.
#
#   STICKY_URL=http://localhost:8080 STICKY_API_KEY=sc_... bash example.sh
set -euo pipefail

STICKY_URL="${STICKY_URL:-http://localhost:8080}"
STICKY_URL="${STICKY_URL%/}"
: "${STICKY_API_KEY:?set STICKY_API_KEY to an API key of your Sticky Calls server}"

fail() { echo "FAIL: $*" >&2; exit 1; }

# post PATH < JSON: sets $status (the HTTP status) and $body (the JSON answer).
answer_file=$(mktemp)
trap 'rm -f "$answer_file"' EXIT
post() {
  status=$(curl -sS -X POST "$STICKY_URL$1" \
    -H "Authorization: Bearer $STICKY_API_KEY" \
    -H "Content-Type: application/json" \
    --data-binary @- -o "$answer_file" -w '%{http_code}')
  body=$(cat "$answer_file")
}
# post_ok PATH < JSON: the same, but anything other than 200 is a failure.
post_ok() {
  post "$1"
  [ "$status" = 200 ] || fail "POST $1 answered $status: $body"
}

# Unique per run, so runs never see each other's callers.
run=$(printf '%06d' $(( (RANDOM * 32768 + RANDOM) % 1000000 )))
call_1="example-curl-$run-1"
call_2="example-curl-$run-2"
customer_ref="cust_example_$run"
phone="+14155$run"                              # +1 415 5xx xxxx, in E.164
phone_as_uri="tel:+1-415-5${run:0:2}-${run:2}"  # the same number as a SIP platform writes it

# 1. A call from a number never seen before: band "low", treat the caller as new.
post_ok /v1/calls/start <<JSON
{"call_id": "$call_1", "identity_hints": {"ani": "$phone"}, "platform": "generic"}
JSON
echo "1. start $call_1 from $phone: band=$(jq -r .band <<<"$body") action=$(jq -r .recommended_action <<<"$body")"
[ "$(jq -r '.band + " " + (.customer_ref // "null")' <<<"$body")" = "low null" ] ||
  fail "a new number should be band low with no customer_ref: $body"

# 2. The call ends: who it was, what it was about, and what to remember.
post_ok /v1/calls/end <<JSON
{"call_id": "$call_1", "customer_ref": "$customer_ref",
 "summary": "Asked to upgrade to the gold plan; waiting for a quote.",
 "intent": "plan_upgrade", "intent_status": "open",
 "variables": {"name": "Ada Lovelace", "plan": "gold"}}
JSON
echo "2. end $call_1: customer_ref=$(jq -r .customer_ref <<<"$body")"
[ "$(jq -r .customer_ref <<<"$body")" = "$customer_ref" ] || fail "the end should link $customer_ref: $body"

# 3. The same number calls again (written another way): recognised, band "high".
post_ok /v1/calls/start <<JSON
{"call_id": "$call_2", "identity_hints": {"ani": "$phone_as_uri"}}
JSON
echo "3. start $call_2 from $phone_as_uri: band=$(jq -r .band <<<"$body")" \
  "confidence=$(jq -r .confidence <<<"$body") customer_ref=$(jq -r .customer_ref <<<"$body")"
[ "$(jq -r .band <<<"$body")" = high ] && [ "$(jq -r .customer_ref <<<"$body")" = "$customer_ref" ] ||
  fail "the caller should be recognised as $customer_ref with band high: $body"
[ "$(jq -r .context.variables.plan <<<"$body")" = gold ] || fail "the saved plan should be gold: $body"
# What an agent greets with: the saved variables, the last call's summary, what is still open.
jq -r '"   greet " + .context.variables.name + " (" + .context.variables.plan + " plan); last call: "
  + .context.recent_calls[0].summary + " Open: " + ([.context.open_intents[].intent] | join(", "))' <<<"$body"

# 4. A mistake: intent_status is "open" or "resolved", not "closed". Every error is JSON:
#    {"error": {"code": "...", "message": "...", "field": "...", "request_id": "..."}}
post /v1/calls/end <<JSON
{"call_id": "$call_2", "intent": "plan_upgrade", "intent_status": "closed"}
JSON
code=$(jq -r .error.code <<<"$body")
field=$(jq -r .error.field <<<"$body")
echo "4. bad end: HTTP $status code=$code field=$field ($(jq -r .error.message <<<"$body"))"
[ "$status $code $field" = "422 invalid_value intent_status" ] ||
  fail "expected 422 invalid_value on intent_status, got $status: $body"

# 5. The same end, fixed: the upgrade is done, so the intent leaves the open list.
post_ok /v1/calls/end <<JSON
{"call_id": "$call_2", "intent": "plan_upgrade", "intent_status": "resolved"}
JSON
echo "5. end $call_2: plan_upgrade resolved"
echo OK
