# Sticky Calls from Ruby, standard library only (net/http and json).
#
# A new caller, the end of their call, the same caller recognised on their next call,
# and what an error looks like. Exits non-zero on any unexpected answer.
#
#   STICKY_URL=http://localhost:8080 STICKY_API_KEY=sc_... ruby example.rb
require "json"
require "net/http"

BASE_URL = ENV.fetch("STICKY_URL", "http://localhost:8080").chomp("/")
API_KEY = ENV.fetch("STICKY_API_KEY", "")
abort "set STICKY_API_KEY to an API key of your Sticky Calls server" if API_KEY.empty?

def fail!(message)
  abort "FAIL: #{message}"
end

# POSTs JSON; returns the HTTP status and the decoded JSON answer (errors are JSON too).
def post(path, body)
  response = Net::HTTP.post(URI(BASE_URL + path), JSON.generate(body),
                            "Authorization" => "Bearer #{API_KEY}",
                            "Content-Type" => "application/json")
  [response.code.to_i, JSON.parse(response.body)]
end

# The same, but anything other than 200 is a failure.
def post_ok(path, body)
  status, answer = post(path, body)
  fail! "POST #{path} answered #{status}: #{answer.to_json}" unless status == 200
  answer
end

# Unique per run, so runs never see each other's callers.
run = format("%06d", rand(1_000_000))
call_1 = "example-ruby-#{run}-1"
call_2 = "example-ruby-#{run}-2"
customer_ref = "cust_example_#{run}"
phone = "+14155#{run}"                             # +1 415 5xx xxxx, in E.164
phone_as_uri = "tel:+1-415-5#{run[0, 2]}-#{run[2..]}" # the same number as a SIP platform writes it

# 1. A call from a number never seen before: band "low", treat the caller as new.
start = post_ok("/v1/calls/start",
                { call_id: call_1, identity_hints: { ani: phone }, platform: "generic" })
puts "1. start #{call_1} from #{phone}: band=#{start["band"]} action=#{start["recommended_action"]}"
unless start["band"] == "low" && start["customer_ref"].nil?
  fail! "a new number should be band low with no customer_ref: #{start.to_json}"
end

# 2. The call ends: who it was, what it was about, and what to remember.
finish = post_ok("/v1/calls/end", {
  call_id: call_1, customer_ref: customer_ref,
  summary: "Asked to upgrade to the gold plan; waiting for a quote.",
  intent: "plan_upgrade", intent_status: "open",
  variables: { name: "Ada Lovelace", plan: "gold" }
})
puts "2. end #{call_1}: customer_ref=#{finish["customer_ref"]}"
fail! "the end should link #{customer_ref}: #{finish.to_json}" unless finish["customer_ref"] == customer_ref

# 3. The same number calls again (written another way): recognised, band "high".
start = post_ok("/v1/calls/start", { call_id: call_2, identity_hints: { ani: phone_as_uri } })
puts "3. start #{call_2} from #{phone_as_uri}: band=#{start["band"]} " \
     "confidence=#{start["confidence"]} customer_ref=#{start["customer_ref"]}"
unless start["band"] == "high" && start["customer_ref"] == customer_ref
  fail! "the caller should be recognised as #{customer_ref} with band high: #{start.to_json}"
end
context = start["context"]
fail! "the saved plan should be gold: #{start.to_json}" unless context["variables"]["plan"] == "gold"
# What an agent greets with: the saved variables, the last call's summary, what is still open.
variables = context["variables"]
open_intents = context["open_intents"].map { |intent| intent["intent"] }.join(", ")
puts "   greet #{variables["name"]} (#{variables["plan"]} plan); " \
     "last call: #{context["recent_calls"][0]["summary"]} Open: #{open_intents}"

# 4. A mistake: intent_status is "open" or "resolved", not "closed". Every error is JSON:
#    {"error": {"code": "...", "message": "...", "field": "...", "request_id": "..."}}
status, answer = post("/v1/calls/end", { call_id: call_2, intent: "plan_upgrade", intent_status: "closed" })
error = answer.fetch("error", {})
puts "4. bad end: HTTP #{status} code=#{error["code"]} field=#{error["field"]} (#{error["message"]})"
unless [status, error["code"], error["field"]] == [422, "invalid_value", "intent_status"]
  fail! "expected 422 invalid_value on intent_status, got #{status}: #{answer.to_json}"
end

# 5. The same end, fixed: the upgrade is done, so the intent leaves the open list.
post_ok("/v1/calls/end", { call_id: call_2, intent: "plan_upgrade", intent_status: "resolved" })
puts "5. end #{call_2}: plan_upgrade resolved"
puts "OK"
