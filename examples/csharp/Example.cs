// Sticky Calls from C#, no NuGet packages: HttpClient, and JSON read through the framework's
// JSON-to-XML reader (System.Runtime.Serialization.Json). Builds with Mono's mcs.
//
// A new caller, the end of their call, the same caller recognised on their next call,
// and what an error looks like. Exits non-zero on any unexpected answer.
//
//   mcs -r:System.Net.Http -r:System.Runtime.Serialization -r:System.Xml.Linq Example.cs
//   STICKY_URL=http://localhost:8080 STICKY_API_KEY=sc_... mono Example.exe
//
// (It uses nothing Mono-only, so it should also build in a .NET 6+ console project, untried
// here; System.Text.Json is the usual JSON choice there.)

using System;
using System.Linq;
using System.Net.Http;
using System.Runtime.Serialization.Json;
using System.Text;
using System.Xml;
using System.Xml.Linq;
using System.Xml.XPath;

static class Example
{
    static readonly string BaseUrl = Env("STICKY_URL", "http://localhost:8080").TrimEnd('/');
    static readonly string ApiKey = Env("STICKY_API_KEY", "");
    static readonly HttpClient Http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };

    static void Main()
    {
        if (ApiKey == "") Fail("set STICKY_API_KEY to an API key of your Sticky Calls server");

        // Unique per run, so runs never see each other's callers.
        string run = new Random().Next(1000000).ToString("D6");
        string call1 = $"example-csharp-{run}-1", call2 = $"example-csharp-{run}-2";
        string customerRef = $"cust_example_{run}";
        string phone = $"+14155{run}";                                          // +1 415 5xx xxxx, in E.164
        string phoneAsUri = $"tel:+1-415-5{run.Substring(0, 2)}-{run.Substring(2)}"; // as a SIP platform writes it

        // 1. A call from a number never seen before: band "low", treat the caller as new.
        Answer start = PostOk("/v1/calls/start",
            new { call_id = call1, identity_hints = new { ani = phone }, platform = "generic" });
        Console.WriteLine($"1. start {call1} from {phone}: band={Get(start, "band")} action={Get(start, "recommended_action")}");
        if (Get(start, "band") != "low" || Get(start, "customer_ref") != null)
            Fail($"a new number should be band low with no customer_ref: {start}");

        // 2. The call ends: who it was, what it was about, and what to remember.
        Answer end = PostOk("/v1/calls/end", new
        {
            call_id = call1, customer_ref = customerRef,
            summary = "Asked to upgrade to the gold plan; waiting for a quote.",
            intent = "plan_upgrade", intent_status = "open",
            variables = new { name = "Ada Lovelace", plan = "gold" },
        });
        Console.WriteLine($"2. end {call1}: customer_ref={Get(end, "customer_ref")}");
        if (Get(end, "customer_ref") != customerRef) Fail($"the end should link {customerRef}: {end}");

        // 3. The same number calls again (written another way): recognised, band "high".
        start = PostOk("/v1/calls/start", new { call_id = call2, identity_hints = new { ani = phoneAsUri } });
        Console.WriteLine($"3. start {call2} from {phoneAsUri}: band={Get(start, "band")} " +
                          $"confidence={Get(start, "confidence")} customer_ref={Get(start, "customer_ref")}");
        if (Get(start, "band") != "high" || Get(start, "customer_ref") != customerRef)
            Fail($"the caller should be recognised as {customerRef} with band high: {start}");
        if (Get(start, "context/variables/plan") != "gold") Fail($"the saved plan should be gold: {start}");
        // What an agent greets with: the saved variables, the last call's summary, what is still open.
        string openIntents = string.Join(", ",
            start.Json.XPathSelectElements("context/open_intents/item/intent").Select(intent => intent.Value));
        Console.WriteLine($"   greet {Get(start, "context/variables/name")} ({Get(start, "context/variables/plan")} plan); " +
                          $"last call: {Get(start, "context/recent_calls/item[1]/summary")} Open: {openIntents}");

        // 4. A mistake: intent_status is "open" or "resolved", not "closed". Every error is JSON:
        //    {"error": {"code": "...", "message": "...", "field": "...", "request_id": "..."}}
        Answer bad = Post("/v1/calls/end", new { call_id = call2, intent = "plan_upgrade", intent_status = "closed" });
        string code = Get(bad, "error/code"), field = Get(bad, "error/field");
        Console.WriteLine($"4. bad end: HTTP {bad.Status} code={code} field={field} ({Get(bad, "error/message")})");
        if (bad.Status != 422 || code != "invalid_value" || field != "intent_status")
            Fail($"expected 422 invalid_value on intent_status, got {bad.Status}: {bad}");

        // 5. The same end, fixed: the upgrade is done, so the intent leaves the open list.
        PostOk("/v1/calls/end", new { call_id = call2, intent = "plan_upgrade", intent_status = "resolved" });
        Console.WriteLine($"5. end {call2}: plan_upgrade resolved");
        Console.WriteLine("OK");
        // Close the client (and its pooled connection) before exiting: Mono 6.8 otherwise crashes
        // now and then (SIGABRT, mono-threads.c) as it stops the threads still waiting on it.
        Http.Dispose();
    }

    // An answer: its HTTP status, its JSON text (errors are JSON too) and that JSON read as XML.
    class Answer
    {
        public int Status;
        public string Text;
        public XElement Json;
        public override string ToString() => Text;
    }

    // POSTs an object as JSON.
    static Answer Post(string path, object body)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, BaseUrl + path)
        {
            Content = new StringContent(ToJson(body), Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("Authorization", "Bearer " + ApiKey);
        HttpResponseMessage response = Http.SendAsync(request).GetAwaiter().GetResult();
        string text = response.Content.ReadAsStringAsync().GetAwaiter().GetResult();
        return new Answer { Status = (int) response.StatusCode, Text = text, Json = ParseJson(text) };
    }

    // The same, but anything other than 200 is a failure.
    static Answer PostOk(string path, object body)
    {
        Answer answer = Post(path, body);
        if (answer.Status != 200) Fail($"POST {path} answered {answer.Status}: {answer}");
        return answer;
    }

    // The framework reads JSON as XML: {"band": "high", "context": {"variables": {"plan": "gold"}}}
    // becomes <root><band>high</band><context><variables><plan>gold</plan>..., and an array's
    // members are <item>s. (A key that is no XML name becomes <item item="the key">.)
    static XElement ParseJson(string json)
    {
        using (var reader = JsonReaderWriterFactory.CreateJsonReader(
                   Encoding.UTF8.GetBytes(json), XmlDictionaryReaderQuotas.Max))
            return XElement.Load(reader);
    }

    // The value at a path such as "context/variables/plan"; null when absent or JSON null.
    static string Get(Answer answer, string path)
    {
        XElement element = answer.Json.XPathSelectElement(path);
        return element == null || (string) element.Attribute("type") == "null" ? null : element.Value;
    }

    // Writes anonymous objects and strings as JSON: new { call_id = "c1", identity_hints = new { ani = "+1..." } }.
    static string ToJson(object value)
    {
        if (value is string text)
        {
            var quoted = new StringBuilder("\"");
            foreach (char c in text)
                quoted.Append(c == '"' || c == '\\' ? "\\" + c : c < ' ' ? $"\\u{(int) c:x4}" : c.ToString());
            return quoted.Append('"').ToString();
        }
        var members = value.GetType().GetProperties().Select(p => ToJson(p.Name) + ": " + ToJson(p.GetValue(value)));
        return "{" + string.Join(", ", members) + "}";
    }

    static void Fail(string message)
    {
        Console.Error.WriteLine("FAIL: " + message);
        Http.Dispose();
        Environment.Exit(1);
    }

    static string Env(string name, string fallback)
    {
        string value = Environment.GetEnvironmentVariable(name);
        return string.IsNullOrEmpty(value) ? fallback : value;
    }
}
