//! The real binary: `serve` logs exactly one access line per request and
//! exits 0 after SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{base_config, client, config_file, Upstream};

#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_one_access_line_per_request_and_drains_on_sigterm() {
    let up = Upstream::start("echo").await;
    let file = config_file(&format!(
        "{}\n[[app]]\nname = \"echo\"\nupstream = \"{}\"\npublic_paths = [\"/open\"]\n",
        base_config(),
        up.url()
    ));
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
