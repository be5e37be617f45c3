// The Unity end of mate's bridge: a TCP listener on the configured address that serves one
// mate bridge at a time (a new connection replaces the old one: a restarted bridge worker
// comes back at once), reads lines with a length cap, and answers each one (Commands).
// Runs on background threads; the avatar is called under one lock, in line order.

using System;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading;

namespace Mate.Unity
{
    public sealed class MateServer : IDisposable
    {
        /// <summary>The longest line read (a batch of a few hundred commands fits).</summary>
        public const int DefaultMaxLine = 64 * 1024;

        private readonly IPEndPoint endpoint;
        private readonly IAvatar avatar;
        private readonly int maxLine;
        private readonly object gate = new object();
        private readonly object avatarGate = new object();
        private TcpListener listener;
        private TcpClient current;
        private volatile bool stopping;

        /// <summary>Said for every connection, line problem and failure (for logs).</summary>
        public event Action<string> Log;

        /// <param name="address">host:port; the host an IP address or "localhost", port 0 for any.</param>
        public MateServer(string address, IAvatar avatar, int maxLine = DefaultMaxLine)
        {
            endpoint = ParseAddress(address);
            this.avatar = avatar;
            this.maxLine = maxLine;
        }

        public static IPEndPoint ParseAddress(string address)
        {
            int colon = address == null ? -1 : address.LastIndexOf(':');
            int port;
            if (colon < 0 || !int.TryParse(address.Substring(colon + 1), out port) || port < 0 || port > 65535)
                throw new ArgumentException("address \"" + address + "\" needs a host and a port, as in 127.0.0.1:5555");
            string host = address.Substring(0, colon).Trim('[', ']');
            IPAddress ip;
            if (host == "localhost") ip = IPAddress.Loopback;
            else if (!IPAddress.TryParse(host, out ip))
                throw new ArgumentException("host \"" + host + "\" is not an IP address");
            return new IPEndPoint(ip, port);
        }

        /// <summary>The port it listens on (the real one when the address said 0).</summary>
        public int Port { get { return ((IPEndPoint)listener.LocalEndpoint).Port; } }

        public void Start()
        {
            listener = new TcpListener(endpoint);
            listener.Start();
            var accept = new Thread(AcceptLoop) { IsBackground = true, Name = "mate accept" };
            accept.Start();
        }

        private void Say(string what)
        {
            var log = Log;
            if (log != null) log(what);
        }

        private void AcceptLoop()
        {
            while (!stopping)
            {
                TcpClient client;
                try { client = listener.AcceptTcpClient(); }
                catch (Exception e)
                {
                    if (stopping) return;
                    Say("accept failed: " + e.Message);
                    Thread.Sleep(100);
                    continue;
                }
                lock (gate)
                {
                    if (current != null)
                    {
                        Say("a new connection replaces the old one");
                        current.Close();
                    }
                    current = client;
                }
                var serve = new Thread(() => Serve(client)) { IsBackground = true, Name = "mate connection" };
                serve.Start();
            }
        }

        private void Serve(TcpClient client)
        {
            Say("mate connected from " + client.Client.RemoteEndPoint);
            try
            {
                client.NoDelay = true;
                NetworkStream stream = client.GetStream();
                var reader = new LineReader(stream, maxLine);
                while (true)
                {
                    string line;
                    LineResult result = reader.Next(out line);
                    if (result == LineResult.End) break;
                    string reply;
                    if (result == LineResult.TooLong)
                        reply = Commands.Error("unknown", "a line longer than " + maxLine + " bytes was skipped");
                    else if (result == LineResult.NotUtf8)
                        reply = Commands.Error("unknown", "a line that is not UTF-8 was skipped");
                    else
                    {
                        lock (avatarGate) reply = Commands.Handle(line, avatar);
                    }
                    byte[] bytes = Encoding.UTF8.GetBytes(reply + "\n");
                    stream.Write(bytes, 0, bytes.Length);
                }
            }
            catch (Exception e) when (e is IOException || e is ObjectDisposedException || e is SocketException)
            {
                // Closed by mate, or replaced by a newer connection.
            }
            finally
            {
                client.Close();
                lock (gate) { if (current == client) current = null; }
                Say("mate disconnected");
            }
        }

        public void Dispose()
        {
            stopping = true;
            if (listener != null) listener.Stop();
            lock (gate) { if (current != null) current.Close(); }
        }
    }

    public enum LineResult { Line, TooLong, NotUtf8, End }

    /// <summary>Reads lines of at most maxLine bytes; a longer one is skipped up to its
    /// newline without being buffered.</summary>
    public sealed class LineReader
    {
        private static readonly UTF8Encoding Strict = new UTF8Encoding(false, true);
        private readonly Stream stream;
        private readonly int maxLine;
        private readonly byte[] buffer = new byte[8192];
        private int start, end;
        private readonly MemoryStream line = new MemoryStream();

        public LineReader(Stream stream, int maxLine)
        {
            this.stream = stream;
            this.maxLine = maxLine;
        }

        public LineResult Next(out string text)
        {
            text = null;
            line.SetLength(0);
            bool tooLong = false;
            while (true)
            {
                if (start == end)
                {
                    start = 0;
                    end = stream.Read(buffer, 0, buffer.Length);
                    if (end <= 0) { end = 0; return LineResult.End; }
                }
                int newline = Array.IndexOf(buffer, (byte)'\n', start, end - start);
                int stop = newline < 0 ? end : newline;
                if (!tooLong)
                {
                    if (line.Length + (stop - start) > maxLine) { tooLong = true; line.SetLength(0); }
                    else line.Write(buffer, start, stop - start);
                }
                start = newline < 0 ? end : newline + 1;
                if (newline < 0) continue;
                if (tooLong) return LineResult.TooLong;
                byte[] bytes = line.ToArray();
                int n = bytes.Length;
                if (n > 0 && bytes[n - 1] == (byte)'\r') n--;
                try { text = Strict.GetString(bytes, 0, n); }
                catch (ArgumentException) { return LineResult.NotUtf8; }
                return LineResult.Line;
            }
        }
    }
}
