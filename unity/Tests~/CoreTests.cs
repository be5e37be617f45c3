// Unit tests of the core, without a test framework (Mono's Debian packages carry none):
// each test is a method; a failed Check throws, and Run counts.

using System;
using System.Collections.Generic;
using System.IO;
using System.Net.Sockets;
using System.Reflection;
using System.Text;

namespace Mate.Unity.Tests
{
    public static class CoreTests
    {
        public static int Run()
        {
            int passed = 0, failed = 0;
            foreach (MethodInfo m in typeof(CoreTests).GetMethods(BindingFlags.NonPublic | BindingFlags.Static))
            {
                if (!m.Name.StartsWith("Test")) continue;
                try { m.Invoke(null, null); passed++; Console.WriteLine("ok   " + m.Name); }
                catch (TargetInvocationException e) { failed++; Console.WriteLine("FAIL " + m.Name + ": " + e.InnerException.Message); }
            }
            Console.WriteLine("{\"passed\":" + passed + ",\"failed\":" + failed + "}");
            return failed == 0 ? 0 : 1;
        }

        private static void Check(bool ok, string what)
        {
            if (!ok) throw new Exception(what);
        }

        private static void Refused(string text, string why)
        {
            try { Json.Parse(text); }
            catch (JsonException e) { Check(e.Message.Contains(why), "\"" + text + "\": " + e.Message + " (expected " + why + ")"); return; }
            throw new Exception("accepted: " + text);
        }

        private static void TestJsonReadsNestingEscapesAndUnicode()
        {
            var v = (Dictionary<string, object>)Json.Parse(
                "{\"a\": [[1, [2.5e1, -0.5]], {\"b\": null}], \"s\": \"q\\\"uo]te{\\\\ \\u00e9\\ud83d\\ude00 \\n\", \"t\": true, \"raw\": \"é😀\"}");
            var a = (List<object>)v["a"];
            Check((double)((List<object>)((List<object>)a[0])[1])[0] == 25.0, "2.5e1");
            Check(((Dictionary<string, object>)a[1])["b"] == null, "null");
            Check((string)v["s"] == "q\"uo]te{\\ é😀 \n", "escapes: " + v["s"]);
            Check((bool)v["t"], "true");
            Check((string)v["raw"] == "é😀", "raw UTF-16");
            Check(Json.Quote("a\"b\\c\n\u0001") == "\"a\\\"b\\\\c\\n\\u0001\"", Json.Quote("a\"b\\c\n\u0001"));
        }

        private static void TestJsonRefusesWhatIsNotJson()
        {
            Refused("", "ends");
            Refused("{\"a\": 1", "ends inside an object");
            Refused("[1, 2", "ends inside an array");
            Refused("{\"a\": \"abc", "ends inside a string");
            Refused("[1,]", "unexpected character");
            Refused("{\"a\": 1,}", "expected a key");
            Refused("{a: 1}", "expected a key");
            Refused("{\"a\": 1} x", "after the value");
            Refused("\"\\x\"", "unknown escape");
            Refused("\"\\ud83d\"", "high surrogate");
            Refused("\"\\ude00\"", "lone low surrogate");
            Refused("\"a\u0001b\"", "control character");
            Refused("01", "after the value");
            Refused("1.", "after '.'");
            Refused("1e", "exponent");
            Refused("1e999", "out of range");
            Refused("{\"a\": 1, \"a\": 2}", "duplicate key");
            Refused("tru", "expected true");
            Refused(new string('[', Json.MaxDepth + 2) + new string(']', Json.MaxDepth + 2), "nested deeper");
        }

        private static void TestJsonSurvivesRandomBytes()
        {
            var random = new Random(20261204);
            var bytes = new byte[64];
            string alphabet = "{}[]\",:\\ 0123456789.eE-+truefalsn\u00e9\ud83d";
            for (int round = 0; round < 20000; round++)
            {
                string text;
                if (round % 2 == 0)
                {
                    random.NextBytes(bytes);
                    text = Encoding.UTF8.GetString(bytes, 0, random.Next(bytes.Length));
                }
                else
                {
                    var sb = new StringBuilder();
                    int n = random.Next(40);
                    for (int k = 0; k < n; k++) sb.Append(alphabet[random.Next(alphabet.Length)]);
                    text = sb.ToString();
                }
                try { Json.Parse(text); }
                catch (JsonException) { }
                // Anything else (IndexOutOfRange, InvalidCast, StackOverflow) fails the test.
            }
        }

        private static void TestCommandsAreCheckedAndBatchesCountedRight()
        {
            var avatar = new RecordingAvatar();
            string r = Commands.Handle("{\"command\":\"set_expression\",\"data\":{\"expression\":\"happy\",\"intensity\":0.5,\"transition_ms\":150}}", avatar);
            Check(r == "{\"type\":\"response\",\"command\":\"set_expression\",\"status\":\"success\"}", r);
            Check(avatar.Calls[0] == "set_expression:happy:0.5:150", avatar.Calls[0]);

            // The original app counted '{' and cut at the first ']': data objects and brackets
            // in strings broke it. Here the count is the commands'.
            r = Commands.Handle("{\"command\":\"batch\",\"data\":{\"commands\":[" +
                "{\"command\":\"play_animation\",\"data\":{\"name\":\"wave] {x}\",\"loop\":false}}," +
                "{\"command\":\"blink\",\"data\":{\"enabled\":true}}," +
                "{\"command\":\"set_expression\",\"data\":{\"expression\":\"sad\"}}],\"count\":3}}", avatar);
            Check(r == "{\"type\":\"response\",\"command\":\"batch\",\"status\":\"success\",\"count\":3}", r);
            Check(avatar.Calls.Count == 4 && avatar.Calls[1] == "play_animation:wave] {x}" && avatar.Calls[3] == "set_expression:sad:1:0", string.Join(" | ", avatar.Calls.ToArray()));

            // A refused command inside a batch: which one, and why; the others are carried out.
            r = Commands.Handle("{\"command\":\"batch\",\"data\":{\"commands\":[" +
                "{\"command\":\"blink\",\"data\":{\"enabled\":false}}," +
                "{\"command\":\"set_expression\",\"data\":{\"expression\":\"happy\",\"intensity\":7}}," +
                "{\"command\":\"load_vrm\",\"data\":{\"path\":\"/m/a.missing\"}}," +
                "{\"command\":\"dance\"}],\"count\":4}}", avatar);
            Check(r.Contains("\"status\":\"error\"") && r.Contains("\"count\":1"), r);
            Check(r.Contains("{\"index\":1,\"command\":\"set_expression\",\"message\":\"\\\"intensity\\\" must be a number from 0 to 1, not 7\"}"), r);
            Check(r.Contains("\"index\":2,\"command\":\"load_vrm\",\"message\":\"no VRM file at /m/a.missing\""), r);
            Check(r.Contains("\"index\":3,\"command\":\"dance\",\"message\":\"unknown command"), r);
            Check(avatar.Calls.Count == 5 && avatar.Calls[4] == "blink:false", string.Join(" | ", avatar.Calls.ToArray()));

            foreach (string bad in new[] {
                "[1,2]", "{}", "{\"command\":3}", "{\"command\":\"blink\",\"data\":[]}",
                "{\"command\":\"blink\",\"data\":{\"enabled\":\"yes\"}}",
                "{\"command\":\"set_expression\",\"data\":{\"expression\":\"x\",\"transition_ms\":1.5}}",
                "{\"command\":\"batch\",\"data\":{\"commands\":[],\"count\":2}}",
                "{\"command\":\"batch\",\"data\":{\"commands\":[{\"command\":\"batch\",\"data\":{\"commands\":[]}}]}}",
                "not json at all" })
            {
                r = Commands.Handle(bad, avatar);
                Check(r.Contains("\"status\":\"error\"") && r.Contains("\"message\":"), bad + " -> " + r);
                Json.Parse(r);
            }
            Check(avatar.Calls.Count == 5, "nothing refused reached the avatar");
        }

        private static void TestTheServerAnswersLinesCapsThemAndTakesTheNewestConnection()
        {
            var avatar = new RecordingAvatar();
            using (var server = new MateServer("127.0.0.1:0", avatar, 1024))
            {
                server.Start();
                var first = Connect(server.Port);
                Check(Ask(first, "{\"command\":\"blink\",\"data\":{\"enabled\":true}}").Contains("success"), "blink");
                Check(Ask(first, new string('x', 5000)).Contains("longer than 1024 bytes"), "over-long line");
                Check(Ask(first, "{\"command\":\"blink\",\"data\":{\"enabled\":false}}\r").Contains("success"), "CRLF");
                // A second connection replaces the first.
                var second = Connect(second: true, port: server.Port);
                Check(Ask(second, "{\"command\":\"play_animation\",\"data\":{\"name\":\"nod\"}}").Contains("success"), "second");
                bool firstClosed;
                try { firstClosed = first.Item2.ReadLine() == null; }
                catch (IOException) { firstClosed = true; }
                Check(firstClosed, "the old connection is closed");
                Check(avatar.Calls.Count == 3 && avatar.Calls[2] == "play_animation:nod", string.Join(" | ", avatar.Calls.ToArray()));
            }
        }

        private static Tuple<TcpClient, StreamReader> Connect(int port, bool second = false)
        {
            var client = new TcpClient("127.0.0.1", port);
            client.ReceiveTimeout = 5000;
            return Tuple.Create(client, new StreamReader(client.GetStream(), new UTF8Encoding(false)));
        }

        private static string Ask(Tuple<TcpClient, StreamReader> c, string line)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(line + "\n");
            c.Item1.GetStream().Write(bytes, 0, bytes.Length);
            return c.Item2.ReadLine() ?? "";
        }
    }
}
