// The C# core's tests under Mono, and the Unity stand-in the end-to-end test runs:
//   mono MateUnityTests.exe test        the unit tests (exit 1 on a failure)
//   mono MateUnityTests.exe peer ADDR   the core serving mate at ADDR with a recording avatar,
//                                       each call printed as a JSON line
//   mono MateUnityTests.exe serve ADDR  the same, printing nothing (for `mate bench bridge`)
// Built with mcs from Runtime/Core/*.cs and this folder (tests/src/mono.rs does it).

using System;
using System.Collections.Generic;
using System.Threading;

namespace Mate.Unity.Tests
{
    /// <summary>An avatar that writes down what it is told (and refuses what it is told to).</summary>
    public sealed class RecordingAvatar : IAvatar
    {
        public readonly List<string> Calls = new List<string>();
        public bool Echo;

        private void Note(string call)
        {
            lock (Calls) Calls.Add(call);
            if (Echo) Console.WriteLine("{\"call\":" + Json.Quote(call) + "}");
        }

        public void LoadVrm(string path)
        {
            if (path.EndsWith(".missing")) throw new AvatarException("no VRM file at " + path);
            Note("load_vrm:" + path);
        }

        public void SetExpression(string expression, float intensity, int transitionMs)
        {
            Note("set_expression:" + expression + ":" + intensity.ToString("0.##", System.Globalization.CultureInfo.InvariantCulture) + ":" + transitionMs);
        }

        public void PlayAnimation(string name, bool loop) { Note("play_animation:" + name + (loop ? ":loop" : "")); }

        public void SetBlink(bool enabled) { Note("blink:" + (enabled ? "true" : "false")); }
    }

    public static class Program
    {
        public static int Main(string[] args)
        {
            // Lines reach a reading process as they are written, not when a buffer fills.
            Console.SetOut(new System.IO.StreamWriter(Console.OpenStandardOutput()) { AutoFlush = true });
            if (args.Length >= 2 && args[0] == "peer") return Peer(args[1], true);
            if (args.Length >= 2 && args[0] == "serve") return Peer(args[1], false);
            if (args.Length >= 1 && args[0] == "test") return CoreTests.Run();
            Console.Error.WriteLine("usage: MateUnityTests.exe test | peer HOST:PORT | serve HOST:PORT");
            return 2;
        }

        private static int Peer(string address, bool echo)
        {
            var avatar = new RecordingAvatar { Echo = echo };
            var server = new MateServer(address, avatar);
            if (echo) server.Log += what => Console.WriteLine("{\"log\":" + Json.Quote(what) + "}");
            server.Start();
            Console.WriteLine("{\"ready\":" + server.Port + "}");
            Thread.Sleep(Timeout.Infinite);
            return 0;
        }
    }
}
