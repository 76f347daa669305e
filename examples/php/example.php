<?php
// Sticky Calls from PHP 8, no extensions beyond the CLI's own: file_get_contents with a
// stream context (no curl extension needed) and json_encode / json_decode.
//
// A new caller, the end of their call, the same caller recognised on their next call,
// and what an error looks like. Exits non-zero on any unexpected answer.
//
//   STICKY_URL=http://localhost:8080 STICKY_API_KEY=sc_... php example.php

function fail(string $message): never
{
    fwrite(STDERR, "FAIL: $message\n");
    exit(1);
}

define('BASE_URL', rtrim(getenv('STICKY_URL') ?: 'http://localhost:8080', '/'));
define('API_KEY', getenv('STICKY_API_KEY') ?: fail('set STICKY_API_KEY to an API key of your Sticky Calls server'));

// POSTs JSON; returns the HTTP status and the decoded JSON answer (errors are JSON too).
function post(string $path, array $body): array
{
    $context = stream_context_create(['http' => [
        'method' => 'POST',
        'header' => "Authorization: Bearer " . API_KEY . "\r\nContent-Type: application/json\r\n",
        'content' => json_encode($body),
        'ignore_errors' => true, // also read the body of 4xx and 5xx answers
        'timeout' => 10,
    ]]);
    $raw = @file_get_contents(BASE_URL . $path, false, $context);
    if ($raw === false) {
        fail("cannot reach " . BASE_URL . $path);
    }
    // The status line: PHP 8.4 has http_get_last_response_headers(), earlier ones this variable.
    $headers = function_exists('http_get_last_response_headers')
        ? http_get_last_response_headers() : $http_response_header;
    preg_match('{^HTTP/\S+ (\d{3})}', $headers[0], $match);
    return [(int) $match[1], json_decode($raw, true, flags: JSON_THROW_ON_ERROR)];
}

// The same, but anything other than 200 is a failure.
function post_ok(string $path, array $body): array
{
    [$status, $answer] = post($path, $body);
    if ($status !== 200) {
        fail("POST $path answered $status: " . json_encode($answer));
    }
    return $answer;
}

// Unique per run, so runs never see each other's callers.
$run = sprintf('%06d', random_int(0, 999999));
$call1 = "example-php-$run-1";
$call2 = "example-php-$run-2";
$customerRef = "cust_example_$run";
$phone = "+14155$run";                                             // +1 415 5xx xxxx, in E.164
$phoneAsUri = 'tel:+1-415-5' . substr($run, 0, 2) . '-' . substr($run, 2); // as a SIP platform writes it

// 1. A call from a number never seen before: band "low", treat the caller as new.
$start = post_ok('/v1/calls/start', [
    'call_id' => $call1, 'identity_hints' => ['ani' => $phone], 'platform' => 'generic',
]);
echo "1. start $call1 from $phone: band={$start['band']} action={$start['recommended_action']}\n";
if ($start['band'] !== 'low' || $start['customer_ref'] !== null) {
    fail('a new number should be band low with no customer_ref: ' . json_encode($start));
}

// 2. The call ends: who it was, what it was about, and what to remember.
$end = post_ok('/v1/calls/end', [
    'call_id' => $call1, 'customer_ref' => $customerRef,
    'summary' => 'Asked to upgrade to the gold plan; waiting for a quote.',
    'intent' => 'plan_upgrade', 'intent_status' => 'open',
    'variables' => ['name' => 'Ada Lovelace', 'plan' => 'gold'],
]);
echo "2. end $call1: customer_ref={$end['customer_ref']}\n";
if ($end['customer_ref'] !== $customerRef) {
    fail("the end should link $customerRef: " . json_encode($end));
}

// 3. The same number calls again (written another way): recognised, band "high".
$start = post_ok('/v1/calls/start', ['call_id' => $call2, 'identity_hints' => ['ani' => $phoneAsUri]]);
echo "3. start $call2 from $phoneAsUri: band={$start['band']} "
    . "confidence={$start['confidence']} customer_ref={$start['customer_ref']}\n";
if ($start['band'] !== 'high' || $start['customer_ref'] !== $customerRef) {
    fail("the caller should be recognised as $customerRef with band high: " . json_encode($start));
}
$context = $start['context'];
if (($context['variables']['plan'] ?? null) !== 'gold') {
    fail('the saved plan should be gold: ' . json_encode($start));
}
// What an agent greets with: the saved variables, the last call's summary, what is still open.
$variables = $context['variables'];
$openIntents = implode(', ', array_column($context['open_intents'], 'intent'));
echo "   greet {$variables['name']} ({$variables['plan']} plan); "
    . "last call: {$context['recent_calls'][0]['summary']} Open: $openIntents\n";

// 4. A mistake: intent_status is "open" or "resolved", not "closed". Every error is JSON:
//    {"error": {"code": "...", "message": "...", "field": "...", "request_id": "..."}}
[$status, $answer] = post('/v1/calls/end', [
    'call_id' => $call2, 'intent' => 'plan_upgrade', 'intent_status' => 'closed',
]);
$error = $answer['error'] ?? [];
$code = $error['code'] ?? null;
$field = $error['field'] ?? null;
echo "4. bad end: HTTP $status code=$code field=$field ({$error['message']})\n";
if ([$status, $code, $field] !== [422, 'invalid_value', 'intent_status']) {
    fail("expected 422 invalid_value on intent_status, got $status: " . json_encode($answer));
}

// 5. The same end, fixed: the upgrade is done, so the intent leaves the open list.
post_ok('/v1/calls/end', ['call_id' => $call2, 'intent' => 'plan_upgrade', 'intent_status' => 'resolved']);
echo "5. end $call2: plan_upgrade resolved\n";
echo "OK\n";
