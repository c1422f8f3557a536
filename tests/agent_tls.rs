//! The agent's TCP API over TLS: a non-loopback `--listen` is served with
//! `--tls-cert`/`--tls-key` (no `--insecure-http` needed), the CLI speaks
//! https with `--ca-cert`, and clear HTTP gets no answer from it.

mod cli_support;

use std::io::{Read, Write};

use cli_support::{arbor, output, start_agent};

#[test]
fn a_tls_listener_serves_the_cli_over_https_and_refuses_clear_http() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let state = dir.path().join("state");
    let (agent_process, line) = start_agent(
        dir.path(),
        "services:\n  idle:\n    command: [sleep, \"301\"]\n",
        [
            "--listen".as_ref(),
            "0.0.0.0:0".as_ref(),
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
    );
    let port = line.trim().rsplit(':').next().unwrap().to_owned();
    let agent = format!("https://localhost:{port}");

    // The CLI over https, trusting the agent's certificate; the token
    // comes from the state dir.
    let mut cmd = arbor();
    cmd.env("ARBOR_STATE_DIR", &state)
        .args(["--agent", &agent, "services", "--ca-cert"])
        .arg(&cert);
    let out = output(cmd).expect(0);
    assert!(out.stdout.contains("idle"), "{}", out.stdout);

    // Without the certificate trusted, the handshake fails, clearly.
    let mut cmd = arbor();
    cmd.env("ARBOR_STATE_DIR", &state)
        .args(["--agent", &agent, "services", "--ca-cert"]);
    cmd.arg(dir.path().join("missing.pem"));
    let out = output(cmd).expect(2);
    assert!(out.stderr.contains("missing.pem"), "{}", out.stderr);

    // Clear HTTP to the TLS port gets no HTTP answer.
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(s, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");

    drop(agent_process);
}
