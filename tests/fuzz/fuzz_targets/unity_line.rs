//! Any bytes from a Unity peer (or sent to one): the capped line reader over a small buffer,
//! then the reply and command parsers on each line. Errors only, never a panic, and a line
//! over the cap is never held.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use mate_protocol::unity::{self, Line};

fuzz_target!(|data: &[u8]| {
    let mut reader = BufReader::with_capacity(16, data);
    let mut buf = Vec::new();
    loop {
        match unity::read_line(&mut reader, &mut buf, 256) {
            Ok(Line::Complete) => {
                assert!(buf.len() <= 256);
                let _ = unity::parse_reply(&buf);
                let _ = unity::parse_command(&buf);
            }
            Ok(Line::TooLong(_)) => assert!(buf.is_empty()),
            Ok(Line::Eof) | Err(_) => break,
        }
    }
});
