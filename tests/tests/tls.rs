//! TLS and dashboard authentication with real processes on loopback (docs/RELIABILITY.md,
//! rows H25-H29): agents verify the master's certificate by CA or by pin and refuse a wrong
//! one, a TLS master refuses plaintext peers, the dashboard speaks HTTPS, and basic auth
//! guards everything but /healthz. Certificates are made at test time (rcgen).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sentinel_tests::*;
use serde_json::Value;

/// A certificate authority made for one test.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// A server certificate for `names` (DNS names or IP addresses): (cert PEM, key PEM,
    /// SHA-256 of the certificate's DER as hex).
    fn server_cert(&self, names: &[&str]) -> (String, String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "sentinel-master");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let pin = sha256_hex(cert.der());
        (cert.pem(), key.serialize_pem(), pin)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::process::{Command, Stdio};
    // sha256sum keeps the test crate free of a hash dependency.
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Certificates for one master: the fleet CA, the master's certificate (valid for
/// 127.0.0.1 and `master.test`) and its pin, in a directory the master can read.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    pin: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("sentinel test fleet CA");
        let (cert, key, pin) = ca.server_cert(&["127.0.0.1", "master.test"]);
        fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        fs::write(dir.path().join("master.crt"), cert).unwrap();
        fs::write(dir.path().join("master.key"), key).unwrap();
        Pki { dir, ca, pin }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A master whose agent port is TLS-only (plus `extra` config lines).
    fn master(&self, extra: &str) -> Master {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\n{extra}",
            self.path("master.crt"),
            self.path("master.key")
        );
        Master::start_configured(&config, dir)
    }
}

fn agent(master: &Master, hostname: &str, config: String) -> Agent {
    Agent::start_opts(
        master.listen,
        &master.token_file,
        hostname,
        "200ms",
        &AgentOpts {
            config,
            ..AgentOpts::default()
        },
    )
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// Stops the agent with SIGTERM and returns its host once the master holds the goodbye.
fn stop_and_settle(master: &Master, agent: &mut Agent) -> Value {
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(10)).success());
    wait_for(Duration::from_secs(10), "the goodbye to land", || {
        master
            .host(&agent.hostname)
            .filter(|h| h["status"] == "stopped")
    })
}

/// Every sample accounted for (the harness's check), and with nothing dropped or lost to a
/// reconnect: all of them received over the one TLS connection.
fn assert_streamed_without_loss(host: &Value) {
    let last = assert_accounted(host);
    assert_eq!(u64_field(host, "samples_dropped"), 0, "{host}");
    assert_eq!(u64_field(host, "reconnects"), 0, "{host}");
    assert_eq!(u64_field(host, "samples_received"), last, "{host}");
}

#[test]
fn agents_stream_over_tls_with_a_ca_verified_or_a_pinned_master_certificate() {
    let pki = Pki::new();
    let master = pki.master("");
    master.wait_healthy(Duration::from_secs(10));
    let ca = toml_path(&pki.path("ca.pem"));
    let mut agents = vec![
        agent(&master, "tls-ca", format!("tls_ca_file = {ca}\n")),
        agent(
            &master,
            "tls-ca-named",
            format!("tls_ca_file = {ca}\ntls_server_name = \"master.test\"\n"),
        ),
        agent(
            &master,
            "tls-pin",
            format!("tls_pin_sha256 = {:?}\n", pki.pin),
        ),
        agent(
            &master,
            "tls-ca-and-pin",
            // The pin as `openssl x509 -fingerprint -sha256` prints it: colons, upper case.
            format!(
                "tls_ca_file = {ca}\ntls_pin_sha256 = {:?}\n",
                colon_upper(&pki.pin)
            ),
        ),
    ];
    for a in &agents {
        wait_for(Duration::from_secs(20), "samples over TLS", || {
            master
                .host(&a.hostname)
                .filter(|h| u64_field(h, "samples_received") >= 10)
        });
    }
    let mut accounted = 0;
    for a in agents.iter_mut() {
        let host = stop_and_settle(&master, a);
        assert_streamed_without_loss(&host);
        assert!(a.log_text().contains("tls=true"), "{}", a.log_text());
        accounted += u64_field(&host, "last_seq");
    }
    assert!(master.log_text().contains("tls=true"));
    println!("hostile-suite: H25 agents over TLS (CA, CA + name, pin, CA + pin): real-agent samples accounted={accounted} lost=0");
}

fn colon_upper(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn an_agent_refuses_a_wrong_master_certificate_and_sends_nothing_while_an_honest_agent_streams() {
    let pki = Pki::new();
    let master = pki.master("");
    master.wait_healthy(Duration::from_secs(10));
    let mut honest = agent(
        &master,
        "honest",
        format!("tls_ca_file = {}\n", toml_path(&pki.path("ca.pem"))),
    );
    // Another CA (a master impersonated with a certificate from elsewhere), a pin of another
    // certificate, and the right CA with a name the certificate does not carry.
    let other = Ca::new("someone else's CA");
    fs::write(pki.path("other-ca.pem"), &other.pem).unwrap();
    let (_, _, other_pin) = other.server_cert(&["127.0.0.1"]);
    let liars = [
        (
            "wrong-ca",
            format!("tls_ca_file = {}\n", toml_path(&pki.path("other-ca.pem"))),
            "UnknownIssuer",
        ),
        (
            "wrong-pin",
            format!("tls_pin_sha256 = {other_pin:?}\n"),
            "not the configured tls_pin_sha256",
        ),
        (
            "wrong-name",
            format!(
                "tls_ca_file = {}\ntls_server_name = \"impostor.test\"\n",
                toml_path(&pki.path("ca.pem"))
            ),
            "not valid for name \"impostor.test\"",
        ),
    ];
    let liar_agents: Vec<(Agent, &str)> = liars
        .iter()
        .map(|(name, config, reason)| (agent(&master, name, config.clone()), *reason))
        .collect();
    let master_addr = master.listen.to_string();
    for (a, reason) in &liar_agents {
        let line = wait_for(
            Duration::from_secs(15),
            "the agent's TLS error line",
            || {
                a.log_text()
                    .lines()
                    .find(|l| l.contains("TLS with the master failed"))
                    .map(str::to_string)
            },
        );
        assert!(
            line.contains(&format!("master={master_addr}")) && line.contains(reason),
            "the error names the master and why: {line}"
        );
    }
    // Each liar retried (with its backoff) and failed each time, logged by the master with
    // the peer and the reason.
    wait_for(
        Duration::from_secs(15),
        "the master to log at least two failed handshakes per liar",
        || {
            (master.log_lines_with(&["TLS handshake failed", "peer=127.0.0.1:", "reason="]) >= 6)
                .then_some(())
        },
    );
    let hosts = master.hosts().unwrap();
    for (name, _, _) in &liars {
        assert!(
            hosts.iter().all(|h| h["hostname"] != *name),
            "{name} must never reach the table: {hosts:?}"
        );
    }
    assert!(master.log_text().contains("received fatal alert"));
    // The honest agent streamed through all of it and goes on streaming.
    let before = master
        .host("honest")
        .map_or(0, |h| u64_field(&h, "samples_received"));
    wait_for(
        Duration::from_secs(10),
        "the honest agent's next samples",
        || {
            master
                .host("honest")
                .filter(|h| u64_field(h, "samples_received") >= before.max(5) + 5)
        },
    );
    let host = stop_and_settle(&master, &mut honest);
    assert_streamed_without_loss(&host);
    let refused = master.log_lines_with(&["TLS handshake failed", "peer=127.0.0.1:"]);
    // /metrics counts every failed handshake (the log is rate-limited, the counter is not).
    let (_, metrics) = master.get("/metrics", Duration::from_secs(2)).unwrap();
    let counted: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"sentinel_collector_refusals_total{code="tls"} "#))
        .and_then(|v| v.trim().parse().ok())
        .expect("a tls refusal series in /metrics");
    assert!(
        counted >= refused && counted > 0,
        "{counted} counted vs {refused} logged"
    );
    println!(
        "hostile-suite: H26 wrong master certificates: handshakes refused by the agents={refused} samples sent to that master=0 real-agent samples accounted={} lost=0",
        u64_field(&host, "last_seq")
    );
}

#[test]
fn a_tls_master_refuses_plaintext_peers_naming_them() {
    let pki = Pki::new();
    let master = pki.master("");
    master.wait_healthy(Duration::from_secs(10));
    // A real agent without TLS settings: it waits for the challenge, the master waits for a
    // ClientHello, then refuses in plaintext so the agent can say why.
    let plain = agent(&master, "plaintext-agent", String::new());
    let line = wait_for(Duration::from_secs(15), "the agent's refusal line", || {
        plain
            .log_text()
            .lines()
            .find(|l| l.contains("The master refused this agent."))
            .map(str::to_string)
    });
    assert!(line.contains("requires TLS"), "{line}");
    wait_for(Duration::from_secs(5), "the master's refusal line", || {
        (master.log_lines_with(&[
            "refused connection",
            "peer=127.0.0.1:",
            "code=\"invalid\"",
            "requires TLS and the peer sent no TLS ClientHello",
        ]) + master.log_lines_with(&[
            "refused connection",
            "peer=127.0.0.1:",
            "code=invalid",
            "requires TLS and the peer sent no TLS ClientHello",
        ]) > 0)
            .then_some(())
    });
    // A peer that talks first in plaintext (an HTTP client here): refused at once, named.
    let mut raw = TcpStream::connect(master.listen).unwrap();
    let me = raw.local_addr().unwrap();
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    wait_for(
        Duration::from_secs(5),
        "the refusal naming that peer",
        || {
            (master.log_lines_with(&[
                "refused connection",
                &format!("peer={me}"),
                "requires TLS and the peer sent plaintext",
            ]) == 1)
                .then_some(())
        },
    );
    assert!(master.host("plaintext-agent").is_none());
    println!("hostile-suite: H27 plaintext peers on a TLS agent port: hostile inputs refused=2");
}

/// A client config trusting `ca_pem` only.
fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn https(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    path: &str,
    headers: &str,
) -> std::io::Result<(u16, String, String)> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn =
        rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    http_request(
        rustls::StreamOwned::new(conn, tcp(addr)?),
        addr,
        path,
        headers,
    )
}

#[test]
fn the_dashboard_speaks_https_to_a_client_trusting_the_ca_and_nothing_else() {
    let pki = Pki::new();
    let config = format!(
        "http_tls_cert_file = {}\nhttp_tls_key_file = {}\n",
        toml_path(&pki.path("master.crt")),
        toml_path(&pki.path("master.key"))
    );
    let master = Master::start_configured(&config, tempfile::tempdir().unwrap());
    let trusted = client_config(&pki.ca.pem);
    wait_for(Duration::from_secs(10), "/healthz over HTTPS", || {
        https(&trusted, master.http, "/healthz", "")
            .ok()
            .filter(|(status, _, _)| *status == 200)
    });
    // A plaintext agent streams meanwhile: HTTPS on the dashboard does not touch port 7410.
    let _a = Agent::start(&master, "behind-https", "200ms");
    let hosts = wait_for(Duration::from_secs(10), "the host over HTTPS", || {
        let (status, head, body) = https(&trusted, master.http, "/api/v1/hosts", "").ok()?;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-security-policy: default-src 'self'"),
            "{head}"
        );
        let v: Value = serde_json::from_str(&body).ok()?;
        let hosts = v["hosts"].as_array()?.clone();
        (!hosts.is_empty()).then_some(hosts)
    });
    assert_eq!(hosts[0]["hostname"], "behind-https");
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = http_request(tcp(master.http).unwrap(), master.http, "/api/v1/hosts", "");
    assert!(plain.is_err(), "plain HTTP must fail: {plain:?}");
    // A client trusting another CA refuses the server.
    let other = client_config(&Ca::new("other").pem);
    let err = https(&other, master.http, "/healthz", "").unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // The server is still up after both.
    assert_eq!(https(&trusted, master.http, "/healthz", "").unwrap().0, 200);
    println!("hostile-suite: H28 HTTPS dashboard: plain HTTP and untrusting clients refused=2 server failures=0");
}

#[test]
fn basic_auth_guards_everything_but_healthz_and_credentials_never_reach_the_log() {
    const PASSWORD: &str = "correct horse battery staple";
    let config = format!(
        "http_basic_auth_user = \"ops\"\nhttp_basic_auth_sha256 = {:?}\n",
        sha256_hex(PASSWORD.as_bytes())
    );
    let master = Master::start_configured(&config, tempfile::tempdir().unwrap());
    master.wait_healthy(Duration::from_secs(10));
    let basic = |user: &str, password: &str| {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        (token.clone(), format!("Authorization: Basic {token}\r\n"))
    };
    let mut refused = 0;
    let (right_token, right) = basic("ops", PASSWORD);
    let (wrong_token, wrong) = basic("ops", "Tr0ub4dor&3");
    let (_, wrong_user) = basic("root", PASSWORD);
    for path in [
        "/",
        "/api/v1/hosts",
        "/metrics",
        "/api/v1/events",
        "/app.js",
    ] {
        for (who, headers) in [
            ("no credentials", ""),
            ("wrong password", &wrong),
            ("wrong user", &wrong_user),
        ] {
            let (status, head, _) =
                http_request(tcp(master.http).unwrap(), master.http, path, headers).unwrap();
            assert_eq!(status, 401, "{path} with {who}");
            assert!(
                head.contains("www-authenticate: Basic realm=\"sentinel\""),
                "{path}: {head}"
            );
            assert!(head.contains("content-security-policy:"), "{head}");
            refused += 1;
        }
    }
    for path in ["/", "/api/v1/hosts", "/metrics", "/app.js"] {
        let (status, _, _) =
            http_request(tcp(master.http).unwrap(), master.http, path, &right).unwrap();
        assert_eq!(status, 200, "{path} with the right credentials");
    }
    let (status, _, body) =
        http_request(tcp(master.http).unwrap(), master.http, "/healthz", "").unwrap();
    assert_eq!(status, 200, "/healthz stays open for health checks: {body}");
    let log = master.log_text();
    for secret in [PASSWORD, "Tr0ub4dor", &right_token, &wrong_token] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    assert!(log.contains("basic_auth_user=\"ops\"") || log.contains("basic_auth_user=ops"));
    println!("hostile-suite: H29 basic auth: requests without the right credentials refused={refused} (401) credentials in the log=0");
}
