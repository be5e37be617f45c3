// A small, strict JSON reader and string writer for mate's Unity wire (C# 7.3, no UnityEngine,
// no allocation beyond the values it returns). Objects become Dictionary<string, object>,
// arrays List<object>, strings string, numbers double, true/false bool, null null.
// Anything that is not JSON (a trailing comma, a lone surrogate, a control character in a
// string, nesting deeper than MaxDepth, a duplicate key) is a JsonException that says where.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace Mate.Unity
{
    public sealed class JsonException : Exception
    {
        public JsonException(string message) : base(message) { }
    }

    public static class Json
    {
        /// <summary>Deepest nesting accepted (a batch of commands needs 4).</summary>
        public const int MaxDepth = 32;

        public static object Parse(string text)
        {
            if (text == null) throw new JsonException("no text");
            var p = new Parser(text);
            p.SkipWhitespace();
            object value = p.ReadValue(0);
            p.SkipWhitespace();
            if (!p.AtEnd) throw p.Error("unexpected text after the value");
            return value;
        }

        /// <summary>A JSON string literal for <paramref name="s"/>, quotes included.</summary>
        public static string Quote(string s)
        {
            var sb = new StringBuilder(s.Length + 2);
            sb.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    default:
                        if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        else sb.Append(c);
                        break;
                }
            }
            sb.Append('"');
            return sb.ToString();
        }

        private sealed class Parser
        {
            private readonly string s;
            private int i;

            public Parser(string text) { s = text; }

            public bool AtEnd { get { return i >= s.Length; } }

            public JsonException Error(string what)
            {
                return new JsonException(what + " at character " + i);
            }

            public void SkipWhitespace()
            {
                while (i < s.Length && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
            }

            public object ReadValue(int depth)
            {
                if (depth > MaxDepth) throw Error("nested deeper than " + MaxDepth);
                if (AtEnd) throw Error("the text ends where a value should be");
                char c = s[i];
                switch (c)
                {
                    case '{': return ReadObject(depth);
                    case '[': return ReadArray(depth);
                    case '"': return ReadString();
                    case 't': Expect("true"); return true;
                    case 'f': Expect("false"); return false;
                    case 'n': Expect("null"); return null;
                    default:
                        if (c == '-' || (c >= '0' && c <= '9')) return ReadNumber();
                        throw Error("unexpected character '" + c + "'");
                }
            }

            private void Expect(string word)
            {
                if (string.CompareOrdinal(s, i, word, 0, word.Length) != 0) throw Error("expected " + word);
                i += word.Length;
            }

            private Dictionary<string, object> ReadObject(int depth)
            {
                var obj = new Dictionary<string, object>(StringComparer.Ordinal);
                i++; // {
                SkipWhitespace();
                if (!AtEnd && s[i] == '}') { i++; return obj; }
                while (true)
                {
                    SkipWhitespace();
                    if (AtEnd || s[i] != '"') throw Error("expected a key in quotes");
                    string key = ReadString();
                    SkipWhitespace();
                    if (AtEnd || s[i] != ':') throw Error("expected ':' after a key");
                    i++;
                    SkipWhitespace();
                    object value = ReadValue(depth + 1);
                    if (obj.ContainsKey(key)) throw Error("duplicate key \"" + key + "\"");
                    obj.Add(key, value);
                    SkipWhitespace();
                    if (AtEnd) throw Error("the text ends inside an object");
                    if (s[i] == ',') { i++; continue; }
                    if (s[i] == '}') { i++; return obj; }
                    throw Error("expected ',' or '}' in an object");
                }
            }

            private List<object> ReadArray(int depth)
            {
                var list = new List<object>();
                i++; // [
                SkipWhitespace();
                if (!AtEnd && s[i] == ']') { i++; return list; }
                while (true)
                {
                    SkipWhitespace();
                    list.Add(ReadValue(depth + 1));
                    SkipWhitespace();
                    if (AtEnd) throw Error("the text ends inside an array");
                    if (s[i] == ',') { i++; continue; }
                    if (s[i] == ']') { i++; return list; }
                    throw Error("expected ',' or ']' in an array");
                }
            }

            private string ReadString()
            {
                i++; // "
                var sb = new StringBuilder();
                while (true)
                {
                    if (AtEnd) throw Error("the text ends inside a string");
                    char c = s[i++];
                    if (c == '"') return sb.ToString();
                    if (c < 0x20) throw Error("a control character inside a string");
                    if (char.IsSurrogate(c))
                    {
                        // Raw UTF-16 in the string: a pair is fine, a lone half is not text.
                        if (char.IsHighSurrogate(c) && !AtEnd && char.IsLowSurrogate(s[i])) { sb.Append(c).Append(s[i++]); continue; }
                        throw Error("a lone surrogate in a string");
                    }
                    if (c != '\\') { sb.Append(c); continue; }
                    if (AtEnd) throw Error("the text ends inside an escape");
                    char e = s[i++];
                    switch (e)
                    {
                        case '"': sb.Append('"'); break;
                        case '\\': sb.Append('\\'); break;
                        case '/': sb.Append('/'); break;
                        case 'b': sb.Append('\b'); break;
                        case 'f': sb.Append('\f'); break;
                        case 'n': sb.Append('\n'); break;
                        case 'r': sb.Append('\r'); break;
                        case 't': sb.Append('\t'); break;
                        case 'u':
                            char u = ReadHex4();
                            if (char.IsHighSurrogate(u))
                            {
                                if (i + 1 < s.Length && s[i] == '\\' && s[i + 1] == 'u')
                                {
                                    i += 2;
                                    char low = ReadHex4();
                                    if (!char.IsLowSurrogate(low)) throw Error("a high surrogate escape without its low half");
                                    sb.Append(u).Append(low);
                                }
                                else throw Error("a high surrogate escape without its low half");
                            }
                            else if (char.IsLowSurrogate(u)) throw Error("a lone low surrogate escape");
                            else sb.Append(u);
                            break;
                        default: throw Error("an unknown escape \\" + e);
                    }
                }
            }

            private char ReadHex4()
            {
                if (i + 4 > s.Length) throw Error("the text ends inside a \\u escape");
                int v = 0;
                for (int k = 0; k < 4; k++)
                {
                    char h = s[i++];
                    int d = h >= '0' && h <= '9' ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                    if (d < 0) throw Error("a bad hex digit in a \\u escape");
                    v = v * 16 + d;
                }
                return (char)v;
            }

            private double ReadNumber()
            {
                int start = i;
                if (s[i] == '-') i++;
                if (AtEnd) throw Error("a number without digits");
                if (s[i] == '0') i++;
                else if (s[i] >= '1' && s[i] <= '9') { while (!AtEnd && s[i] >= '0' && s[i] <= '9') i++; }
                else throw Error("a number without digits");
                if (!AtEnd && s[i] == '.')
                {
                    i++;
                    if (AtEnd || s[i] < '0' || s[i] > '9') throw Error("a number with no digits after '.'");
                    while (!AtEnd && s[i] >= '0' && s[i] <= '9') i++;
                }
                if (!AtEnd && (s[i] == 'e' || s[i] == 'E'))
                {
                    i++;
                    if (!AtEnd && (s[i] == '+' || s[i] == '-')) i++;
                    if (AtEnd || s[i] < '0' || s[i] > '9') throw Error("a number with no digits in its exponent");
                    while (!AtEnd && s[i] >= '0' && s[i] <= '9') i++;
                }
                double v;
                if (!double.TryParse(s.Substring(start, i - start), NumberStyles.Float, CultureInfo.InvariantCulture, out v) || double.IsInfinity(v))
                    throw Error("a number out of range");
                return v;
            }
        }
    }
}
