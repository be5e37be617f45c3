// mate's Unity wire: one JSON object per line, {"command": NAME, "data": {...}}, answered with
// {"type": "response", "command": NAME, "status": "success"|"error", ...}. A batch carries its
// commands and their count; its answer gives the count carried out and, for each refused
// command, which one (its index) and why ("errors", which older peers of mate ignore).
// Every command is checked before the avatar hears of it.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace Mate.Unity
{
    public static class Commands
    {
        /// <summary>The reply line (without newline) to one command line.</summary>
        public static string Handle(string line, IAvatar avatar)
        {
            object json;
            try { json = Json.Parse(line); }
            catch (JsonException e) { return Error("unknown", "not JSON: " + e.Message); }
            var obj = json as Dictionary<string, object>;
            if (obj == null) return Error("unknown", "a command is a JSON object");
            string name;
            string why = NameOf(obj, out name);
            if (why != null) return Error(name ?? "unknown", why);
            if (name != "batch") return Single(name, obj, avatar);

            Dictionary<string, object> data;
            why = DataOf(obj, out data);
            if (why != null) return Error(name, why);
            List<object> commands = Get(data, "commands") as List<object>;
            if (commands == null) return Error(name, "a batch needs \"commands\", a list");
            object count = Get(data, "count");
            if (count != null && !(count is double && (double)count == commands.Count))
                return Error(name, "\"count\" says " + Show(count) + " but the batch holds " + commands.Count + " commands");
            int done = 0;
            var errors = new List<string>();
            for (int k = 0; k < commands.Count; k++)
            {
                var one = commands[k] as Dictionary<string, object>;
                string oneName = null;
                string oneWhy = one == null ? "a command is a JSON object" : NameOf(one, out oneName);
                if (oneWhy == null && oneName == "batch") oneWhy = "a batch inside a batch";
                if (oneWhy == null) oneWhy = Apply(oneName, one, avatar);
                if (oneWhy == null) { done++; continue; }
                errors.Add("{\"index\":" + k + ",\"command\":" + Json.Quote(oneName ?? "unknown") + ",\"message\":" + Json.Quote(oneWhy) + "}");
            }
            var sb = new StringBuilder("{\"type\":\"response\",\"command\":\"batch\",\"status\":");
            sb.Append(errors.Count == 0 ? "\"success\"" : "\"error\"");
            sb.Append(",\"count\":").Append(done);
            if (errors.Count > 0)
            {
                sb.Append(",\"message\":").Append(Json.Quote(errors.Count + " of " + commands.Count + " commands refused"));
                sb.Append(",\"errors\":[").Append(string.Join(",", errors.ToArray())).Append(']');
            }
            return sb.Append('}').ToString();
        }

        private static string Single(string name, Dictionary<string, object> obj, IAvatar avatar)
        {
            string why = Apply(name, obj, avatar);
            return why == null ? Success(name) : Error(name, why);
        }

        /// <summary>Checks one command and carries it out; null, or why not.</summary>
        private static string Apply(string name, Dictionary<string, object> obj, IAvatar avatar)
        {
            Dictionary<string, object> data;
            string why = DataOf(obj, out data);
            if (why != null) return why;
            try
            {
                switch (name)
                {
                    case "load_vrm":
                        {
                            string path = Get(data, "path") as string;
                            if (string.IsNullOrEmpty(path)) return "load_vrm needs \"path\", a string";
                            avatar.LoadVrm(path);
                            return null;
                        }
                    case "set_expression":
                        {
                            string expression = Get(data, "expression") as string;
                            if (string.IsNullOrEmpty(expression)) return "set_expression needs \"expression\", a string";
                            double intensity = 1.0;
                            object iv = Get(data, "intensity");
                            if (iv != null)
                            {
                                if (!(iv is double) || (double)iv < 0 || (double)iv > 1) return "\"intensity\" must be a number from 0 to 1, not " + Show(iv);
                                intensity = (double)iv;
                            }
                            int transition = 0;
                            object tv = Get(data, "transition_ms");
                            if (tv != null)
                            {
                                if (!(tv is double) || (double)tv < 0 || (double)tv > 600000 || Math.Floor((double)tv) != (double)tv)
                                    return "\"transition_ms\" must be a whole number of milliseconds from 0 to 600000, not " + Show(tv);
                                transition = (int)(double)tv;
                            }
                            avatar.SetExpression(expression, (float)intensity, transition);
                            return null;
                        }
                    case "play_animation":
                        {
                            string anim = Get(data, "name") as string;
                            if (string.IsNullOrEmpty(anim)) return "play_animation needs \"name\", a string";
                            object loop = Get(data, "loop");
                            if (loop != null && !(loop is bool)) return "\"loop\" must be true or false";
                            avatar.PlayAnimation(anim, loop is bool && (bool)loop);
                            return null;
                        }
                    case "blink":
                        {
                            object enabled = Get(data, "enabled");
                            if (!(enabled is bool)) return "blink needs \"enabled\", true or false";
                            avatar.SetBlink((bool)enabled);
                            return null;
                        }
                    default:
                        return "unknown command \"" + name + "\" (load_vrm, set_expression, play_animation, blink, batch)";
                }
            }
            catch (AvatarException e) { return e.Message; }
        }

        private static string NameOf(Dictionary<string, object> obj, out string name)
        {
            name = Get(obj, "command") as string;
            return string.IsNullOrEmpty(name) ? "no \"command\" name" : null;
        }

        private static string DataOf(Dictionary<string, object> obj, out Dictionary<string, object> data)
        {
            object d = Get(obj, "data");
            data = d as Dictionary<string, object>;
            if (d == null) { data = new Dictionary<string, object>(); return null; }
            return data == null ? "\"data\" must be an object" : null;
        }

        private static object Get(Dictionary<string, object> obj, string key)
        {
            object v;
            return obj.TryGetValue(key, out v) ? v : null;
        }

        private static string Show(object v)
        {
            if (v == null) return "null";
            if (v is double) return ((double)v).ToString(CultureInfo.InvariantCulture);
            if (v is bool) return (bool)v ? "true" : "false";
            if (v is string) return Json.Quote((string)v);
            return v is List<object> ? "a list" : "an object";
        }

        public static string Success(string command)
        {
            return "{\"type\":\"response\",\"command\":" + Json.Quote(command) + ",\"status\":\"success\"}";
        }

        public static string Error(string command, string message)
        {
            return "{\"type\":\"response\",\"command\":" + Json.Quote(command) + ",\"status\":\"error\",\"message\":" + Json.Quote(message) + "}";
        }
    }
}
