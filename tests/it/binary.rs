//! The real binary: `serve` logs exactly one access line per request and
//! exits 0 after SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{base_config, client, config_file, Upstream};

/// The base config with one app, `echo` in front of `up`, public under `/open`.
fn echo_open_config(up: &Upstream) -> crate::support::ConfigFile {
    config_file(&format!(
        "{}\n[[app]]\nname = \"echo\"\nupstream = \"{}\"\npublic_paths = [\"/open\"]\n",
        base_config(),
        up.url()
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_one_access_line_per_request_and_drains_on_sigterm() {
    let up = Upstream::start("echo").await;
    let file = echo_open_config(&up);
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&file.path)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The start-up line names the address actually bound (port 0 in the file).
    let mut listen = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "portcullis is serving" {
            listen = v["fields"]["listen"].as_str().map(str::to_string);
            break;
        }
    }
    let listen = listen.expect("no start-up line");
    let c = client();
    let mut ready = false;
    for _ in 0..100 {
        if c.get(format!("http://{listen}/open")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the gateway never answered");
    let r = c
        .get(format!("http://{listen}/closed?token=secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the gateway did not exit within 5 s of SIGTERM")
    });
    assert!(status.success(), "{status}");

    let access: Vec<serde_json::Value> = rx
        .try_iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter(|v| v["target"] == "portcullis::access")
        .collect();
    // The readiness probe made one or more /open requests, then one /closed.
    let closed: Vec<_> = access
        .iter()
        .filter(|v| v["fields"]["path"] == "/closed")
        .collect();
    assert_eq!(closed.len(), 1, "{access:#?}");
    let f = &closed[0]["fields"];
    assert_eq!(f["status"], 401);
    assert_eq!(f["outcome"], "unauthorized");
    assert_eq!(f["app"], "echo");
    assert_eq!(f["method"], "GET");
    assert!(f["duration_ms"].is_number());
    let opens = access
        .iter()
        .filter(|v| v["fields"]["path"] == "/open")
        .count();
    assert_eq!(
        opens,
        up.requests().len(),
        "one access line per proxied request"
    );
    assert!(
        !access.iter().any(|v| v.to_string().contains("secret")),
        "the query was logged"
    );
}

/// The real binary serving `config` with `args` after `serve`, `env` added
/// (and `RUST_LOG`, `PORTCULLIS_SERVER__LOG_FORMAT` removed unless given);
/// its stderr lines arrive on the receiver.
fn spawn_binary(
    config: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.arg("serve")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("PORTCULLIS_SERVER__LOG_FORMAT")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let rx = stderr_lines(&mut child);
    (child, rx)
}

/// The lines `child` writes to its (piped) stderr, on a channel.
fn stderr_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The address of the start-up line, and whether that line was JSON.
fn serving_address(rx: &mpsc::Receiver<String>) -> (String, bool) {
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["fields"]["message"] == "portcullis is serving" {
                return (v["fields"]["listen"].as_str().unwrap().to_string(), true);
            }
        } else if line.contains("portcullis is serving") {
            let listen = line
                .split(' ')
                .find_map(|w| w.strip_prefix("listen="))
                .unwrap_or_else(|| panic!("no listen= in {line}"));
            return (listen.to_string(), false);
        }
    }
    panic!("no start-up line");
}

/// SIGTERM, then every line the binary wrote.
fn stop(mut child: std::process::Child, rx: mpsc::Receiver<String>) -> Vec<String> {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    for _ in 0..200 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
        panic!("the gateway did not exit within 10 s of SIGTERM");
    }
    // The reader thread ends at EOF, which ends the channel: waiting up to
    // 10 s a line costs nothing then, and a loaded machine (seen once: a
    // release build beside the whole suite) may take more than 2 s to pass
    // the last lines on.
    let mut lines = Vec::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(10)) {
        lines.push(l);
    }
    lines
}

/// The `fields` of every JSON access line.
fn access_fields(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "portcullis::access")
        .map(|v| v["fields"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_line_names_the_user_the_client_behind_a_trusted_proxy_and_the_request_id() {
    let provider = crate::bearer::provider().await;
    let up = Upstream::start("api").await;
    let file = config_file(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8080"
trusted_proxies = ["127.0.0.1"]
threads = 1
shutdown_timeout = "2s"

[session]
secrets = ["{secret}"]

[store]
url = "sqlite::memory:"

[[source]]
slug = "ci"
type = "openidconnect"
oidc_well_known_url = "{wk}"

[[app]]
name = "api"
upstream = "{up}"
jwt_sources = ["ci"]
jwt_audiences = ["api"]
[[app.policy]]
on = ["access"]
effect = "allow"
"#,
        secret = crate::support::SECRET,
        wk = provider.well_known_url(),
        up = up.url()
    ));
    let (child, rx) = spawn_binary(&file.path, &["--log-format", "json"], &[]);
    let (listen, _) = serving_address(&rx);
    let token = provider
        .sign(&crate::bearer::claims(&provider.issuer(), |_| {}))
        .unwrap();
    let c = client();
    let signed = c
        .get(format!("http://{listen}/deploy"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-forwarded-for", "198.51.100.1, 203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    let anonymous = c
        .get(format!("http://{listen}/anonymous"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let shown: serde_json::Value = anonymous.json().await.unwrap();
    let shown_id = shown["request_id"].as_str().unwrap().to_string();
    // Forward auth's 401 names its request too.
    let checked = c
        .get(format!("http://{listen}/_auth/check"))
        .send()
        .await
        .unwrap();
    assert_eq!(checked.status(), 401);
    let checked: serde_json::Value = checked.json().await.unwrap();
    let check_id = checked["request_id"].as_str().unwrap().to_string();

    let access = access_fields(&stop(child, rx));
    let line = |path: &str| {
        let found: Vec<_> = access.iter().filter(|f| f["path"] == path).collect();
        assert_eq!(found.len(), 1, "{access:#?}");
        found[0].clone()
    };
    let deploy = line("/deploy");
    assert_eq!(deploy["user"], "ci-job-7");
    // The peer is a trusted proxy: the client is the first hop it did not add.
    assert_eq!(deploy["client_ip"], "203.0.113.7");
    assert_eq!(deploy["status"], 200);
    assert_eq!(deploy["request_id"].as_str().unwrap().len(), 12);
    let refused = line("/anonymous");
    assert_eq!(refused["user"], "-");
    assert_eq!(refused["client_ip"], "127.0.0.1");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["request_id"], shown_id.as_str());
    assert_ne!(refused["request_id"], deploy["request_id"]);
    assert_eq!(line("/_auth/check")["request_id"], check_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn log_format_comes_from_the_flag_else_the_config_or_its_environment_variable_else_text() {
    let up = Upstream::start("echo").await;
    let app = format!(
        "[[app]]\nname = \"echo\"\nupstream = \"{}\"\npublic_paths = [\"/\"]\n\
         [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
        up.url()
    );
    let plain = config_file(&format!("{}\n{app}", base_config()));
    // The key joins `[server]`, the first table of the base config.
    let json_in_file = config_file(&format!(
        "{}\n{app}",
        base_config().replacen("[session]", "log_format = \"json\"\n\n[session]", 1)
    ));
    for (name, file, args, env, json) in [
        ("default", &plain, &[][..], &[][..], false),
        ("config", &json_in_file, &[][..], &[][..], true),
        (
            "environment",
            &plain,
            &[][..],
            &[("PORTCULLIS_SERVER__LOG_FORMAT", "json")][..],
            true,
        ),
        (
            "flag over config",
            &json_in_file,
            &["--log-format", "text"][..],
            &[][..],
            false,
        ),
    ] {
        let (child, rx) = spawn_binary(&file.path, args, env);
        let (listen, started_json) = serving_address(&rx);
        assert_eq!(started_json, json, "{name}: the start-up line");
        let r = client()
            .get(format!("http://{listen}/hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let lines = stop(child, rx);
        let access: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("portcullis::access") && l.contains("/hello"))
            .collect();
        assert_eq!(access.len(), 1, "{name}: {lines:#?}");
        let parsed = serde_json::from_str::<serde_json::Value>(access[0]);
        if json {
            let v = parsed.unwrap_or_else(|e| panic!("{name}: {e}: {}", access[0]));
            assert_eq!(v["fields"]["status"], 200, "{name}");
            assert_eq!(v["fields"]["client_ip"], "127.0.0.1", "{name}");
        } else {
            assert!(parsed.is_err(), "{name}: {}", access[0]);
            for part in [
                "INFO portcullis::access: request",
                "path=/hello",
                "status=200",
                "user=-",
                "client_ip=127.0.0.1",
            ] {
                assert!(
                    access[0].contains(part),
                    "{name}: {part} missing: {}",
                    access[0]
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_log_turns_the_access_lines_off_and_the_other_lines_stay() {
    let up = Upstream::start("echo").await;
    let file = echo_open_config(&up);
    for (filter, lines_wanted) in [("info,portcullis::access=off", false), ("info", true)] {
        let (child, rx) = spawn_binary(
            &file.path,
            &["--log-format", "json"],
            &[("RUST_LOG", filter)],
        );
        let (listen, _) = serving_address(&rx);
        let c = client();
        for path in ["/open", "/closed"] {
            let r = c
                .get(format!("http://{listen}{path}"))
                .send()
                .await
                .unwrap();
            assert!(
                r.status() == 200 || r.status() == 401,
                "{path}: {}",
                r.status()
            );
        }
        let lines = stop(child, rx);
        let paths: Vec<_> = access_fields(&lines)
            .iter()
            .map(|f| f["path"].to_string())
            .collect();
        if lines_wanted {
            assert_eq!(paths, ["\"/open\"", "\"/closed\""], "{filter}");
        } else {
            assert!(paths.is_empty(), "{filter}: {paths:?}");
        }
        // The gateway's other lines are still written (its shutdown line, say).
        assert!(
            lines
                .iter()
                .any(|l| !l.contains("portcullis::access") && l.contains("\"INFO\"")),
            "{filter}: {lines:?}"
        );
    }
}

/// A head hyper's own parser refuses (a space inside a field name) gets an
/// access line like any request's (DESIGN: the user or `-`, the client IP
/// and a request id), saying the head was malformed.
#[tokio::test(flavor = "multi_thread")]
async fn a_head_the_http_parser_refuses_gets_a_whole_access_line() {
    use std::io::{Read, Write};
    let up = Upstream::start("echo").await;
    let file = echo_open_config(&up);
    let (child, rx) = spawn_binary(&file.path, &["--log-format", "json"], &[]);
    let (listen, _) = serving_address(&rx);
    let mut s = std::net::TcpStream::connect(&listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /open HTTP/1.1\r\nHost: x\r\nBad Field: y\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let lines = stop(child, rx);
    let refused: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l.contains("portcullis::access"))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(refused.len(), 1, "{lines:#?}");
    let f = &refused[0]["fields"];
    assert_eq!(f["status"], 400, "{f}");
    assert_eq!(f["outcome"], "bad_request", "{f}");
    assert_eq!(f["error"], "malformed request head", "{f}");
    assert_eq!(f["user"], "-", "{f}");
    assert_eq!(f["client_ip"], "127.0.0.1", "{f}");
    let id = f["request_id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 12, "{f}");
}

/// `serve --dev` reads no config file, yet `PORTCULLIS_SERVER__LOG_FORMAT`
/// sets its log format as it does a configured gateway's (DESIGN: without a
/// flag); the flag still wins, and a value that is no format is refused
/// naming the variable.
#[test]
fn serve_dev_takes_its_log_format_from_the_environment_variable_and_the_flag_wins() {
    for (args, value, json) in [
        (&[][..], Some("json"), true),
        (&["--log-format", "text"][..], Some("json"), false),
        (&[][..], None, false),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.args(args)
            .args(["serve", "--dev", "--port", "0"])
            .env_remove("RUST_LOG")
            .env_remove("PORTCULLIS_SERVER__LOG_FORMAT")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        if let Some(v) = value {
            cmd.env("PORTCULLIS_SERVER__LOG_FORMAT", v);
        }
        let mut child = cmd.spawn().unwrap();
        let rx = stderr_lines(&mut child);
        let (_, started_json) = serving_address(&rx);
        assert_eq!(started_json, json, "{args:?} {value:?}");
        stop(child, rx);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--dev", "--port", "0"])
        .env("PORTCULLIS_SERVER__LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PORTCULLIS_SERVER__LOG_FORMAT"), "{err}");
    assert!(err.contains("server.log_format"), "{err}");
}

/// A value found wrong only as `serve` starts names its key, the config file
/// and the variable that sets it, like a load error: an upstream that does
/// not resolve is a config error (exit 2); a store that cannot be opened
/// exits 1 (the database may only be down for now).
#[test]
fn start_up_errors_name_the_key_the_file_and_the_variable() {
    let run = |config: &str| {
        let file = config_file(config);
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("serve")
            .arg("--config")
            .arg(&file.path)
            .env_remove("PORTCULLIS_CONFIG")
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err, file.path.display().to_string())
    };
    let app = |upstream: &str| {
        format!("\n[[app]]\nname = \"wiki\"\nupstream = \"{upstream}\"\npublic_paths = [\"/\"]\n")
    };
    let (code, err, file) = run(&format!(
        "{}{}",
        base_config(),
        app("http://no-such-host.invalid:3000")
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&file)
            && err.contains("app[wiki].upstream: cannot resolve")
            && err.contains("PORTCULLIS_APP__WIKI__UPSTREAM"),
        "{err}"
    );
    let missing_dir = std::env::temp_dir().join("portcullis-no-such-dir/sub/users.db");
    let (code, err, file) = run(&format!(
        "{}{}",
        base_config().replace(
            "sqlite::memory:",
            &format!("sqlite://{}", missing_dir.display())
        ),
        app("http://127.0.0.1:9")
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&file) && err.contains("store.url:") && err.contains("PORTCULLIS_STORE__URL"),
        "{err}"
    );
    // A listen address that is taken names which of the two keys it is.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    for (key, var) in [
        ("listen", "PORTCULLIS_SERVER__LISTEN"),
        ("admin_listen", "PORTCULLIS_SERVER__ADMIN_LISTEN"),
    ] {
        let config = base_config().replacen(
            &format!("\n{key} = \"127.0.0.1:0\""),
            &format!("\n{key} = \"{addr}\""),
            1,
        );
        assert!(config.contains(&addr.to_string()), "{config}");
        let (code, err, file) = run(&format!("{config}{}", app("http://127.0.0.1:9")));
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&file)
                && err.contains(&format!("server.{key}: cannot listen on {addr}"))
                && err.contains(var),
            "{err}"
        );
    }
}
