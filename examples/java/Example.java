// Sticky Calls from Java 17, no libraries: java.net.http.HttpClient, and a minimal JSON
// reader at the bottom (in your project, a JSON library such as Jackson does its job).
//
// A new caller, the end of their call, the same caller recognised on their next call,
// and what an error looks like. Exits non-zero on any unexpected answer.
//
//   STICKY_URL=http://localhost:8080 STICKY_API_KEY=sc_... java Example.java

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.Collectors;

public class Example {
    static final String BASE_URL = env("STICKY_URL", "http://localhost:8080").replaceAll("/+$", "");
    static final String API_KEY = env("STICKY_API_KEY", "");
    static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();

    public static void main(String[] args) throws Exception {
        if (API_KEY.isEmpty()) fail("set STICKY_API_KEY to an API key of your Sticky Calls server");

        // Unique per run, so runs never see each other's callers.
        String run = String.format("%06d", ThreadLocalRandom.current().nextInt(1_000_000));
        String call1 = "example-java-" + run + "-1", call2 = "example-java-" + run + "-2";
        String customerRef = "cust_example_" + run;
        String phone = "+14155" + run;                                                // +1 415 5xx xxxx, in E.164
        String phoneAsUri = "tel:+1-415-5" + run.substring(0, 2) + "-" + run.substring(2); // as a SIP platform writes it

        // Request bodies are written as JSON text; the values put in here need no escaping
        // (your own may: escape " and \ in them, or let a JSON library write the body).

        // 1. A call from a number never seen before: band "low", treat the caller as new.
        Map<String, Object> start = postOk("/v1/calls/start", """
            {"call_id": "%s", "identity_hints": {"ani": "%s"}, "platform": "generic"}
            """.formatted(call1, phone));
        System.out.printf("1. start %s from %s: band=%s action=%s%n",
            call1, phone, start.get("band"), start.get("recommended_action"));
        if (!"low".equals(start.get("band")) || start.get("customer_ref") != null) {
            fail("a new number should be band low with no customer_ref: " + start);
        }

        // 2. The call ends: who it was, what it was about, and what to remember.
        Map<String, Object> end = postOk("/v1/calls/end", """
            {"call_id": "%s", "customer_ref": "%s",
             "summary": "Asked to upgrade to the gold plan; waiting for a quote.",
             "intent": "plan_upgrade", "intent_status": "open",
             "variables": {"name": "Ada Lovelace", "plan": "gold"}}
            """.formatted(call1, customerRef));
        System.out.printf("2. end %s: customer_ref=%s%n", call1, end.get("customer_ref"));
        if (!customerRef.equals(end.get("customer_ref"))) fail("the end should link " + customerRef + ": " + end);

        // 3. The same number calls again (written another way): recognised, band "high".
        start = postOk("/v1/calls/start", """
            {"call_id": "%s", "identity_hints": {"ani": "%s"}}
            """.formatted(call2, phoneAsUri));
        System.out.printf("3. start %s from %s: band=%s confidence=%s customer_ref=%s%n",
            call2, phoneAsUri, start.get("band"), start.get("confidence"), start.get("customer_ref"));
        if (!"high".equals(start.get("band")) || !customerRef.equals(start.get("customer_ref"))) {
            fail("the caller should be recognised as " + customerRef + " with band high: " + start);
        }
        Map<String, Object> context = object(start.get("context"));
        Map<String, Object> variables = object(context.get("variables"));
        if (!"gold".equals(variables.get("plan"))) fail("the saved plan should be gold: " + start);
        // What an agent greets with: the saved variables, the last call's summary, what is still open.
        Map<String, Object> lastCall = object(list(context.get("recent_calls")).get(0));
        String openIntents = list(context.get("open_intents")).stream()
            .map(intent -> (String) object(intent).get("intent")).collect(Collectors.joining(", "));
        System.out.printf("   greet %s (%s plan); last call: %s Open: %s%n",
            variables.get("name"), variables.get("plan"), lastCall.get("summary"), openIntents);

        // 4. A mistake: intent_status is "open" or "resolved", not "closed". Every error is JSON:
        //    {"error": {"code": "...", "message": "...", "field": "...", "request_id": "..."}}
        Answer bad = post("/v1/calls/end", """
            {"call_id": "%s", "intent": "plan_upgrade", "intent_status": "closed"}
            """.formatted(call2));
        Map<String, Object> error = object(bad.json().getOrDefault("error", Map.of()));
        System.out.printf("4. bad end: HTTP %d code=%s field=%s (%s)%n",
            bad.status(), error.get("code"), error.get("field"), error.get("message"));
        if (bad.status() != 422 || !"invalid_value".equals(error.get("code"))
                || !"intent_status".equals(error.get("field"))) {
            fail("expected 422 invalid_value on intent_status, got " + bad.status() + ": " + bad.body());
        }

        // 5. The same end, fixed: the upgrade is done, so the intent leaves the open list.
        postOk("/v1/calls/end", """
            {"call_id": "%s", "intent": "plan_upgrade", "intent_status": "resolved"}
            """.formatted(call2));
        System.out.printf("5. end %s: plan_upgrade resolved%n", call2);
        System.out.println("OK");
    }

    /** An HTTP status, the answer's JSON text (errors are JSON too) and that JSON decoded. */
    record Answer(int status, String body, Map<String, Object> json) {}

    static Answer post(String path, String body) throws Exception {
        HttpRequest request = HttpRequest.newBuilder(URI.create(BASE_URL + path))
            .header("Authorization", "Bearer " + API_KEY)
            .header("Content-Type", "application/json")
            .timeout(Duration.ofSeconds(10))
            .POST(HttpRequest.BodyPublishers.ofString(body))
            .build();
        HttpResponse<String> response = HTTP.send(request, HttpResponse.BodyHandlers.ofString());
        return new Answer(response.statusCode(), response.body(), object(Json.parse(response.body())));
    }

    /** The same, but anything other than 200 is a failure. */
    static Map<String, Object> postOk(String path, String body) throws Exception {
        Answer answer = post(path, body);
        if (answer.status() != 200) fail("POST " + path + " answered " + answer.status() + ": " + answer.body());
        return answer.json();
    }

    static void fail(String message) {
        System.err.println("FAIL: " + message);
        System.exit(1);
    }

    static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> object(Object json) {
        return (Map<String, Object>) Objects.requireNonNull(json, "expected a JSON object, got null");
    }

    @SuppressWarnings("unchecked")
    static List<Object> list(Object json) {
        return (List<Object>) Objects.requireNonNull(json, "expected a JSON array, got null");
    }

    /** A minimal JSON reader: objects become Maps, arrays Lists, numbers Doubles, null null. */
    static final class Json {
        private final String text;
        private int at;

        private Json(String text) { this.text = text; }

        static Object parse(String text) {
            Json json = new Json(text);
            Object value = json.value();
            if (json.skipSpace() != text.length()) throw json.error("trailing characters");
            return value;
        }

        private Object value() {
            char c = text.charAt(skipSpace());
            if (c == '{') {
                Map<String, Object> map = new LinkedHashMap<>();
                at++;
                if (text.charAt(skipSpace()) == '}') { at++; return map; }
                while (true) {
                    skipSpace();
                    String key = string();
                    expect(':');
                    map.put(key, value());
                    if (expect(',', '}') == '}') return map;
                }
            }
            if (c == '[') {
                List<Object> list = new ArrayList<>();
                at++;
                if (text.charAt(skipSpace()) == ']') { at++; return list; }
                while (true) {
                    list.add(value());
                    if (expect(',', ']') == ']') return list;
                }
            }
            if (c == '"') return string();
            for (String word : new String[] {"true", "false", "null"}) {
                if (text.startsWith(word, at)) { at += word.length(); return word.equals("null") ? null : word.equals("true"); }
            }
            int start = at;
            while (at < text.length() && "+-.eE0123456789".indexOf(text.charAt(at)) >= 0) at++;
            if (start == at) throw error("unexpected '" + c + "'");
            return Double.parseDouble(text.substring(start, at));
        }

        private String string() {
            expect('"');
            StringBuilder out = new StringBuilder();
            for (char c = text.charAt(at++); c != '"'; c = text.charAt(at++)) {
                if (c != '\\') { out.append(c); continue; }
                char escaped = text.charAt(at++);
                switch (escaped) {
                    case 'n' -> out.append('\n');
                    case 't' -> out.append('\t');
                    case 'r' -> out.append('\r');
                    case 'b' -> out.append('\b');
                    case 'f' -> out.append('\f');
                    case 'u' -> { out.append((char) Integer.parseInt(text.substring(at, at + 4), 16)); at += 4; }
                    default -> out.append(escaped); // \" \\ \/
                }
            }
            return out.toString();
        }

        private int skipSpace() {
            while (at < text.length() && Character.isWhitespace(text.charAt(at))) at++;
            return at;
        }

        private char expect(char... allowed) {
            char c = text.charAt(skipSpace());
            for (char a : allowed) if (c == a) { at++; return c; }
            throw error("expected one of " + new String(allowed));
        }

        private IllegalArgumentException error(String what) {
            return new IllegalArgumentException("bad JSON at " + at + ": " + what);
        }
    }
}
