use super::*;

#[test]
fn an_out_of_memory_is_found_in_what_the_process_wrote_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs");
    let [stderr, log] = worker_logs(dir.path(), WorkerKind::Llm);
    // An earlier process ran out of memory; this one wrote something else.
    std::fs::write(&stderr, "CUDA error: out of memory\n").expect("write");
    let starts = [file_len(&stderr), file_len(&log)];
    std::fs::write(
        &stderr,
        "CUDA error: out of memory\nggml.c:123: fatal error\n",
    )
    .expect("write");
    assert_eq!(out_of_memory_line(dir.path(), &starts), None);
    std::fs::write(
        &log,
        "INFO llama: load\nERROR ggml_backend_cuda_buffer_type_alloc_buffer: allocating \
             512.00 MiB on device 0: cudaMalloc failed: out of memory\n",
    )
    .expect("write");
    let line = out_of_memory_line(dir.path(), &starts).expect("found");
    assert!(line.contains("cudaMalloc failed"), "{line}");
}

#[test]
fn a_second_supervisor_on_the_same_state_dir_is_refused_with_the_pid() {
    let dir = tempfile::tempdir().expect("dir");
    let first = StateLock::acquire(dir.path()).expect("first");
    let err = StateLock::acquire(dir.path()).expect_err("second");
    let text = err.to_string();
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    assert!(text.contains("mate ctl shutdown"), "{text}");
    first.release();
    StateLock::acquire(dir.path()).expect("free again after release");
}

#[test]
fn exits_read_as_words() {
    assert_eq!(
        describe_exit(ExitStatus::Signal(9)),
        "was killed by signal 9 (SIGKILL)"
    );
    assert_eq!(describe_exit(ExitStatus::Code(3)), "exited with code 3");
}
