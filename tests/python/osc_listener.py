"""A real OSC receiver standing in for a VMC app (VSeeFace, Warudo): python-osc's UDP server,
printing every message it gets as a JSON line, in order of arrival (bundles unpacked).

Run by tests/tests/vmc.rs: `python3 osc_listener.py PORT`.
"""

import json
import sys
import time

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer


def handler(address, *args):
    print(json.dumps({"t": time.monotonic(), "address": address, "args": list(args)}), flush=True)


dispatcher = Dispatcher()
dispatcher.set_default_handler(handler)
server = BlockingOSCUDPServer(("127.0.0.1", int(sys.argv[1])), dispatcher)
print(json.dumps({"ready": True}), flush=True)
server.serve_forever()
