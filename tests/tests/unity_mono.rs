//! The Unity package's C# core (`unity/Runtime/Core`) under Mono: its own tests (the JSON
//! reader against hostile lines, command checks, batches, the server), and end to end, the
//! real `mate up` bridge worker driving it with a recording avatar, through a kill -9 and
//! restart of the C# peer.
#![cfg(target_os = "linux")]

use std::{
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use mate_tests::{
    free_address,
    mono::{csharp_tests, mono},
    spawn_piped, spawn_ready, wait_output, wait_until, Mate as _, StateDir,
};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn the_csharp_core_passes_its_tests_under_mono() {
    let Some(exe) = csharp_tests("the_csharp_core_passes_its_tests_under_mono") else {
        return;
    };
    let out = wait_output(spawn_piped(mono(&exe, &["test"])), Duration::from_secs(120));
    let printed = String::from_utf8_lossy(&out.stdout);
    eprintln!("{printed}");
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("\"failed\":0"), "{printed}");
}

/// The C# core serving mate at `address`, the avatar calls it records.
struct Peer {
    child: std::process::Child,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    fn start(exe: &std::path::Path, address: &str) -> Peer {
        let (child, lines) = spawn_ready(mono(exe, &["peer", address]), "the C# peer", LIMIT);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&calls);
        std::thread::spawn(move || collect(&lines, &sink));
        Peer { child, calls }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls").clone()
    }

    fn wait_for(&self, what: &str, call: &str) {
        wait_until(LIMIT, what, || self.calls().iter().any(|c| c == call));
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(lines: &mpsc::Receiver<String>, calls: &Mutex<Vec<String>>) {
    for line in lines.iter() {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(call) = v["call"].as_str() {
            calls.lock().expect("calls").push(call.to_string());
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn mate_up_drives_the_csharp_core_and_restores_a_restarted_peer() {
    let Some(exe) = csharp_tests("mate_up_drives_the_csharp_core…") else {
        return;
    };
    let address = free_address();
    let mut peer = Peer::start(&exe, &address);
    let state = StateDir::new();
    // VMC on too, to a plain UDP socket: both sinks at once.
    let vmc = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    vmc.set_read_timeout(Some(LIMIT)).expect("timeout");
    let vmc_address = vmc.local_addr().expect("address");
    state.write_config(&format!(
        "[chat]\nmax_tokens = 8\n[unity]\naddress = \"{address}\"\n[avatar]\nthinking = \"thinking\"\ntalking = \"neutral\"\n\
         [vmc]\nenabled = true\naddress = \"{vmc_address}\"\nresend_ms = 200\n"
    ));
    let model = state.fake_model();
    let _sup = state.up(&model, &[]);
    state.wait_running(LIMIT);
    peer.wait_for("the avatar's state on connect", "blink:true");

    // A reply's expressions arrive in order: thinking when the message goes, talking when the
    // reply starts.
    let out = state.run(&["ctl", "chat", "Hello there"], LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    peer.wait_for("the talking expression", "set_expression:neutral:1:150");
    let calls = peer.calls();
    let at = |c: &str| calls.iter().position(|x| x == c);
    assert!(
        at("set_expression:thinking:1:150") < at("set_expression:neutral:1:150"),
        "{calls:?}"
    );

    // Several commands at once leave as one batch line, counted right by the C# side.
    for cmd in [
        &["ctl", "avatar", "animation", "wave"][..],
        &["ctl", "avatar", "blink", "off"],
        &["ctl", "avatar", "expression", "happy"],
    ] {
        let out = state.run(cmd, LIMIT);
        assert!(out.status.success(), "{cmd:?}");
    }
    peer.wait_for("the happy expression", "set_expression:happy:1:150");
    // The VMC sink got the same expression: a frame with Joy at 1.0.
    let joy_at_one = {
        // OSC: the string argument padded to 4 bytes, then the float, big-endian.
        let mut frame = b"Joy\0".to_vec();
        frame.extend_from_slice(&1.0f32.to_be_bytes());
        frame
    };
    let mut buf = [0u8; 4096];
    wait_until(LIMIT, "a VMC frame with Joy at 1.0", || {
        vmc.recv(&mut buf)
            .is_ok_and(|n| buf[..n].windows(joy_at_one.len()).any(|w| w == joy_at_one))
    });
    wait_until(LIMIT, "every command answered", || {
        state.worker("bridge").is_some_and(|b| {
            let s = &b["vitals"]["bridge"];
            s["acks_pending"] == 0 && s["acked"] == s["sent"] && s["sent"].as_u64() >= Some(5)
        })
    });
    let bridge = state.worker("bridge").expect("bridge");
    let s = &bridge["vitals"]["bridge"];
    assert_eq!(
        (&s["errors"], &s["malformed"], &s["timeouts"]),
        (&0.into(), &0.into(), &0.into()),
        "{s}"
    );

    // kill -9 of the C# peer, and a new one: the bridge reconnects and brings the avatar back.
    peer.kill();
    let peer = Peer::start(&exe, &address);
    peer.wait_for("the expression restored", "set_expression:happy:1:150");
    peer.wait_for("blink restored", "blink:false");
    let restored = peer.calls();
    assert!(
        !restored
            .iter()
            .any(|c| c.starts_with("play_animation:wave")),
        "a one-shot animation is not replayed: {restored:?}"
    );
    // The restore went as one batch, whose count the C# side got right: all acked, no error.
    wait_until(LIMIT, "the restore answered", || {
        state.worker("bridge").is_some_and(|b| {
            let s = &b["vitals"]["bridge"];
            s["acks_pending"] == 0 && s["acked"] == s["sent"]
        })
    });
    let s = state.worker("bridge").expect("bridge")["vitals"]["bridge"].clone();
    assert_eq!(
        (&s["errors"], &s["malformed"]),
        (&0.into(), &0.into()),
        "{s}"
    );
    assert!(
        s["lines"].as_u64() < s["sent"].as_u64(),
        "some line carried a batch: {s}"
    );
}

#[test]
fn a_command_the_csharp_core_refuses_inside_a_batch_is_named_with_why() {
    let Some(exe) = csharp_tests("a_command_the_csharp_core_refuses…") else {
        return;
    };
    let address = free_address();
    let peer = Peer::start(&exe, &address);
    let state = StateDir::new();
    // The avatar's state on connect is one batch: the model (which the recording avatar
    // refuses: no such file) and blink.
    state.write_config(&format!(
        "[unity]\naddress = \"{address}\"\nvrm = \"/models/mate.missing\"\n"
    ));
    let model = state.fake_model();
    let _sup = state.up(&model, &[]);
    state.wait_running(LIMIT);
    peer.wait_for("blink, carried out beside the refused model", "blink:true");
    wait_until(LIMIT, "the refusal reported", || {
        state
            .worker("bridge")
            .is_some_and(|b| b["vitals"]["bridge"]["errors"] == 1)
    });
    let bridge = state.worker("bridge").expect("bridge");
    let why = bridge["vitals"]["bridge"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.contains("load_vrm (command 1 of 2): no VRM file at /models/mate.missing"),
        "{why}"
    );
    assert_eq!(bridge["vitals"]["bridge"]["acked"], 1, "{bridge}");
}
