#!/usr/bin/env python3
"""Sticky Calls from Python, standard library only (urllib.request and json).

A new caller, the end of their call, the same caller recognised on their next call,
and what an error looks like. Exits non-zero on any unexpected answer.

    STICKY_URL=http://localhost:8080 STICKY_API_KEY=sc_... python3 example.py
"""
import json
import os
import random
import sys
import urllib.error
import urllib.request

BASE_URL = os.environ.get("STICKY_URL", "http://localhost:8080").rstrip("/")
API_KEY = os.environ.get("STICKY_API_KEY") or sys.exit(
    "set STICKY_API_KEY to an API key of your Sticky Calls server")


def fail(message):
    sys.exit(f"FAIL: {message}")


def post(path, body):
    """POSTs JSON; returns (HTTP status, the decoded JSON answer). Errors are JSON too."""
    request = urllib.request.Request(
        BASE_URL + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:  # 4xx and 5xx: the body is {"error": {...}}
        return error.code, json.load(error)


def post_ok(path, body):
    """The same, but anything other than 200 is a failure."""
    status, answer = post(path, body)
    if status != 200:
        fail(f"POST {path} answered {status}: {json.dumps(answer)}")
    return answer


# Unique per run, so runs never see each other's callers.
run = f"{random.randrange(1_000_000):06d}"
call_1, call_2 = f"example-python-{run}-1", f"example-python-{run}-2"
customer_ref = f"cust_example_{run}"
phone = f"+14155{run}"                           # +1 415 5xx xxxx, in E.164
phone_as_uri = f"tel:+1-415-5{run[:2]}-{run[2:]}"  # the same number as a SIP platform writes it

# 1. A call from a number never seen before: band "low", treat the caller as new.
start = post_ok("/v1/calls/start", {
    "call_id": call_1, "identity_hints": {"ani": phone}, "platform": "generic"})
print(f"1. start {call_1} from {phone}: band={start['band']} action={start['recommended_action']}")
if start["band"] != "low" or start["customer_ref"] is not None:
    fail(f"a new number should be band low with no customer_ref: {start}")

# 2. The call ends: who it was, what it was about, and what to remember.
end = post_ok("/v1/calls/end", {
    "call_id": call_1, "customer_ref": customer_ref,
    "summary": "Asked to upgrade to the gold plan; waiting for a quote.",
    "intent": "plan_upgrade", "intent_status": "open",
    "variables": {"name": "Ada Lovelace", "plan": "gold"}})
print(f"2. end {call_1}: customer_ref={end['customer_ref']}")
if end["customer_ref"] != customer_ref:
    fail(f"the end should link {customer_ref}: {end}")

# 3. The same number calls again (written another way): recognised, band "high".
start = post_ok("/v1/calls/start", {"call_id": call_2, "identity_hints": {"ani": phone_as_uri}})
print(f"3. start {call_2} from {phone_as_uri}: band={start['band']} "
      f"confidence={start['confidence']} customer_ref={start['customer_ref']}")
if start["band"] != "high" or start["customer_ref"] != customer_ref:
    fail(f"the caller should be recognised as {customer_ref} with band high: {start}")
context = start["context"]
if context["variables"].get("plan") != "gold":
    fail(f"the saved plan should be gold: {start}")
# What an agent greets with: the saved variables, the last call's summary, what is still open.
open_intents = ", ".join(intent["intent"] for intent in context["open_intents"])
print(f"   greet {context['variables']['name']} ({context['variables']['plan']} plan); "
      f"last call: {context['recent_calls'][0]['summary']} Open: {open_intents}")

# 4. A mistake: intent_status is "open" or "resolved", not "closed". Every error is JSON:
#    {"error": {"code": "...", "message": "...", "field": "...", "request_id": "..."}}
status, answer = post("/v1/calls/end", {
    "call_id": call_2, "intent": "plan_upgrade", "intent_status": "closed"})
error = answer.get("error", {})
print(f"4. bad end: HTTP {status} code={error.get('code')} field={error.get('field')} "
      f"({error.get('message')})")
if (status, error.get("code"), error.get("field")) != (422, "invalid_value", "intent_status"):
    fail(f"expected 422 invalid_value on intent_status, got {status}: {answer}")

# 5. The same end, fixed: the upgrade is done, so the intent leaves the open list.
post_ok("/v1/calls/end", {"call_id": call_2, "intent": "plan_upgrade", "intent_status": "resolved"})
print(f"5. end {call_2}: plan_upgrade resolved")
print("OK")
