//! Handshakes over real local sockets: stale socket recovery, refusal to steal a live
//! endpoint, permissions, deadlines and rejections.
#![cfg(unix)]

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    thread,
    time::{Duration, Instant},
};

use interprocess::local_socket::traits::Listener as _;
use mate_protocol::{
    endpoint::accept_hello, frame, AuthToken, Endpoint, Error, Hello, Limit, Rejection, Reply,
    Request, Role,
};

fn endpoint(dir: &tempfile::TempDir) -> Endpoint {
    Endpoint::for_state_dir(dir.path())
}

/// Accepts peers until one says hello with `token`, then answers one request with `Reply::Ok`.
fn serve_one(
    listener: interprocess::local_socket::Listener,
    token: AuthToken,
    deadline: Duration,
) -> thread::JoinHandle<Result<Hello, Error>> {
    thread::spawn(move || loop {
        let mut stream = listener.accept()?;
        let verdict = accept_hello(&mut stream, deadline, |h| {
            if h.token.matches(&token) {
                Ok(())
            } else {
                Err(Rejection::BadToken)
            }
        });
        // Liveness probes (`Endpoint::is_live`) connect and leave without a word.
        let hello = match verdict {
            Err(Error::Closed) => continue,
            other => other?,
        };
        let _: Request = frame::read_frame(&mut stream, Limit::Control)?;
        frame::write_frame(&mut stream, &Reply::Ok, Limit::Data)?;
        return Ok(hello);
    })
}

#[test]
fn handshake_then_request_over_a_real_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ep = endpoint(&dir);
    let token = AuthToken::generate().expect("token");
    let server = serve_one(
        ep.listen().expect("listen"),
        token.clone(),
        Duration::from_secs(5),
    );

    let (mut stream, pid) = ep.connect(&Hello::new(Role::Ctl, token)).expect("connect");
    assert_eq!(pid, std::process::id());
    frame::write_frame(&mut stream, &Request::Status, Limit::Control).expect("send");
    let reply: Reply = frame::read_frame(&mut stream, Limit::Data).expect("reply");
    assert_eq!(reply, Reply::Ok);

    let hello = server.join().expect("thread").expect("server side");
    assert_eq!(hello.role, Role::Ctl);
    assert_eq!(hello.pid, std::process::id());
}

#[test]
fn wrong_token_is_rejected_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ep = endpoint(&dir);
    let right = AuthToken::generate().expect("token");
    let server = serve_one(ep.listen().expect("listen"), right, Duration::from_secs(5));

    let wrong = AuthToken::generate().expect("token");
    let err = ep
        .connect(&Hello::new(Role::Tui, wrong))
        .expect_err("must be refused");
    assert!(
        matches!(err, Error::Rejected(Rejection::BadToken)),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad auth token"));
    let server_err = server.join().expect("thread").expect_err("server refuses");
    assert!(matches!(server_err, Error::Rejected(Rejection::BadToken)));
}

#[test]
fn a_peer_that_sends_half_a_hello_and_stalls_is_dropped_at_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ep = endpoint(&dir);
    let token = AuthToken::generate().expect("token");
    let server = serve_one(
        ep.listen().expect("listen"),
        token,
        Duration::from_millis(200),
    );

    let mut stalled = ep.connect_raw().expect("connect");
    stalled.write_all(&[40, 0]).expect("half a header");
    let started = Instant::now();
    let err = server.join().expect("thread").expect_err("deadline");
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ep = endpoint(&dir);
    std::fs::create_dir_all(ep.path().parent().expect("parent")).expect("mkdir");
    // A std listener does not unlink its file on drop: exactly what a crash leaves behind.
    drop(std::os::unix::net::UnixListener::bind(ep.path()).expect("bind"));
    assert!(ep.path().exists());
    assert!(!ep.is_live());

    let token = AuthToken::generate().expect("token");
    let server = serve_one(
        ep.listen().expect("stale socket replaced"),
        token.clone(),
        Duration::from_secs(5),
    );
    let (mut stream, _) = ep.connect(&Hello::new(Role::Ctl, token)).expect("connect");
    frame::write_frame(&mut stream, &Request::Status, Limit::Control).expect("send");
    server.join().expect("thread").expect("served");
}

#[test]
fn a_live_endpoint_is_never_stolen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ep = endpoint(&dir);
    let token = AuthToken::generate().expect("token");
    let first = ep.listen().expect("first listener");
    assert!(ep.is_live());

    let err = ep.listen().expect_err("second listener refused");
    assert!(matches!(err, Error::EndpointInUse { .. }), "{err:?}");
    assert!(err.to_string().contains("--state-dir"));

    // The first listener still owns the name and serves.
    let server = serve_one(first, token.clone(), Duration::from_secs(5));
    let (mut stream, _) = ep.connect(&Hello::new(Role::Ctl, token)).expect("connect");
    frame::write_frame(&mut stream, &Request::Status, Limit::Control).expect("send");
    server.join().expect("thread").expect("served");
}

#[test]
fn socket_lives_in_a_private_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ep = endpoint(&dir);
    let run = ep.path().parent().expect("parent").to_path_buf();
    std::fs::create_dir_all(&run).expect("mkdir");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let _listener = ep.listen().expect("listen");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&run), 0o700, "directory tightened to 0700");
    assert_eq!(mode(ep.path()), 0o600, "socket is 0600");
}

#[test]
fn socket_file_is_removed_when_the_listener_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ep = endpoint(&dir);
    drop(ep.listen().expect("listen"));
    assert!(!ep.path().exists());
}

#[test]
fn an_overlong_socket_path_is_a_clear_error() {
    let ep = Endpoint::at(format!("/tmp/{}/mate.sock", "d".repeat(120)));
    let err = ep.listen().expect_err("too long");
    assert!(matches!(err, Error::PathTooLong { .. }), "{err:?}");
    assert!(err.to_string().contains("shorter --state-dir"));
}

#[cfg(feature = "tokio")]
mod tokio_flavour {
    use super::*;
    use mate_protocol::async_io;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn async_handshake_and_stall_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ep = endpoint(&dir);
        let listener = ep.listen_tokio().expect("listen");
        let token = AuthToken::generate().expect("token");

        let expected = token.clone();
        let server = tokio::spawn(async move {
            use interprocess::local_socket::tokio::prelude::*;
            let mut results = Vec::new();
            for _ in 0..3 {
                let mut s = listener.accept().await?;
                let expected = expected.clone();
                results.push(
                    async_io::server_handshake(&mut s, Duration::from_millis(300), move |h| {
                        if h.token.matches(&expected) {
                            Ok(())
                        } else {
                            Err(Rejection::BadToken)
                        }
                    })
                    .await
                    .map(|h| h.role),
                );
            }
            Ok::<_, Error>(results)
        });

        let mut good = ep.connect_raw_tokio().await.expect("connect");
        let pid = async_io::client_handshake(
            &mut good,
            &Hello::new(Role::LlmWorker, token),
            Duration::from_secs(5),
        )
        .await
        .expect("accepted");
        assert_eq!(pid, std::process::id());

        let mut bad = ep.connect_raw_tokio().await.expect("connect");
        let err = async_io::client_handshake(
            &mut bad,
            &Hello::new(Role::LlmWorker, AuthToken::generate().expect("token")),
            Duration::from_secs(5),
        )
        .await
        .expect_err("bad token");
        assert!(matches!(err, Error::Rejected(Rejection::BadToken)));

        let mut stalled = ep.connect_raw_tokio().await.expect("connect");
        stalled.write_all(&[9, 0, 0]).await.expect("partial");
        let results = server.await.expect("join").expect("server");
        assert_eq!(results[0].as_ref().ok(), Some(&Role::LlmWorker));
        assert!(matches!(
            results[1],
            Err(Error::Rejected(Rejection::BadToken))
        ));
        assert!(
            matches!(results[2], Err(Error::Timeout)),
            "{:?}",
            results[2]
        );
    }
}
