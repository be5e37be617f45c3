//! The bridge's VMC sink against a real OSC peer: python-osc's UDP server standing in for
//! VSeeFace or Warudo, receiving what `mate up` sends when the avatar changes expression,
//! after the peer restarts, and after the bridge worker is killed.
#![cfg(target_os = "linux")]

use std::{sync::mpsc, time::Duration};

use mate_tests::{py::PyClients, signal, spawn_ready, wait_until, Mate as _, StateDir};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// python-osc's server on `port`, its messages as they come.
struct Peer {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn start(py: &PyClients, port: u16) -> Peer {
        let script = py.script("osc_listener.py", &[&port.to_string()]);
        let (child, lines) = spawn_ready(script, "the OSC peer", LIMIT);
        Peer { child, lines }
    }

    /// Messages until `until` holds for one (that one included), failing after `limit`.
    fn until(&self, limit: Duration, mut until: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let deadline = std::time::Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("the OSC peer did not get what was expected in {limit:?}; got {} messages, last: {:?}", got.len(), got.last())
            });
            let v: Value = serde_json::from_str(&line).expect("json");
            let done = until(&v);
            got.push(v);
            if done {
                return got;
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value_of(message: &Value, shape: &str) -> Option<f64> {
    (message["address"] == "/VMC/Ext/Blend/Val" && message["args"][0] == shape)
        .then(|| message["args"][1].as_f64())
        .flatten()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

#[test]
fn a_real_osc_peer_gets_the_expression_interpolated_in_order_and_again_after_restarts() {
    let Some(py) = PyClients::find("a_real_osc_peer_gets…") else {
        return;
    };
    let port = free_udp_port();
    let peer = Peer::start(&py, port);
    let state = StateDir::new();
    state.write_config(&format!(
        "[chat]\nmax_tokens = 8\n[avatar]\ntransition_ms = 400\n\
         [vmc]\nenabled = true\naddress = \"127.0.0.1:{port}\"\nblink = false\nresend_ms = 300\n"
    ));
    let model = state.fake_model();
    let _sup = state.up(&model, &[]);
    state.wait_running(LIMIT);
    // The neutral face first (the resend), then the change.
    peer.until(LIMIT, |m| m["address"] == "/VMC/Ext/Blend/Apply");
    let out = state.run(&["ctl", "avatar", "expression", "happy"], LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = peer.until(LIMIT, |m| value_of(m, "Joy").is_some_and(|v| v > 0.999));

    // Joy rises in steps (a transition at a steady rate, not a jump), never back down, and
    // every frame ends with Apply.
    let joy: Vec<f64> = got.iter().filter_map(|m| value_of(m, "Joy")).collect();
    let rising: Vec<f64> = joy.iter().copied().skip_while(|v| *v == 0.0).collect();
    assert!(
        rising.windows(2).all(|w| w[1] >= w[0]),
        "Joy only rises: {rising:?}"
    );
    let between = rising.iter().filter(|v| **v > 0.0 && **v < 1.0).count();
    assert!(between >= 3, "interpolated over 400 ms: {rising:?}");
    let frames: Vec<&str> = got.iter().filter_map(|m| m["address"].as_str()).collect();
    let applies = frames
        .iter()
        .filter(|a| **a == "/VMC/Ext/Blend/Apply")
        .count();
    assert!(applies >= between, "{frames:?}");
    for shape in ["Angry", "Sorrow", "Fun", "Neutral"] {
        assert!(
            got.iter()
                .filter_map(|m| value_of(m, shape))
                .all(|v| v == 0.0),
            "{shape} stays at 0"
        );
    }

    // An app started after mate (here: the peer restarted) catches up from the resend.
    drop(peer);
    let peer = Peer::start(&py, port);
    peer.until(Duration::from_secs(5), |m| {
        value_of(m, "Joy").is_some_and(|v| v > 0.999)
    });

    // A killed bridge worker comes back and carries on with the avatar's state.
    let bridge = state.worker_pid("bridge").expect("bridge pid");
    signal(bridge, "KILL");
    wait_until(LIMIT, "a new bridge worker", || {
        state.worker_pid("bridge").is_some_and(|p| p != bridge)
    });
    // Messages from before the kill may still be queued: look past them.
    let fresh = std::time::Instant::now();
    peer.until(LIMIT, |m| {
        fresh.elapsed() > Duration::from_millis(500)
            && value_of(m, "Joy").is_some_and(|v| v > 0.999)
    });
}
