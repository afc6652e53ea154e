//! The config loader on random TOML and environment overrides: it never
//! panics, and every error names where it is: the file for unreadable TOML,
//! a key (and the file, or the variable the value came from) for each problem.
#![no_main]

use std::io::Write as _;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::config::ConfigError;

/// One file per fuzzing process, rewritten for each input (the loader reads a path).
fn file() -> &'static std::path::Path {
    static FILE: OnceLock<std::path::PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::var_os("TMPDIR").map_or_else(std::env::temp_dir, Into::into);
        dir.join(format!(
            "portcullis-fuzz-config-{}.toml",
            std::process::id()
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // After a `#--env--` line: `NAME=value` lines, the environment.
    let (toml, env) = text.split_once("\n#--env--\n").unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let path = file();
    let written = std::fs::File::create(path).and_then(|mut f| f.write_all(toml.as_bytes()));
    if written.is_err() {
        return;
    }
    match portcullis::config::load_with_env(path, env.clone()) {
        Ok(config) => {
            // A config that loads renders for `portcullis check`.
            let _ = portcullis::config::render(&config);
        }
        Err(ConfigError::Unreadable { file, reason }) => {
            assert_eq!(file, path);
            assert!(!reason.is_empty(), "an unreadable file without a reason");
        }
        Err(e @ ConfigError::Invalid { .. }) => {
            let rendered = e.to_string();
            let ConfigError::Invalid { problems, .. } = e else {
                return;
            };
            assert!(!problems.is_empty(), "invalid, but no problem named");
            for p in &problems {
                assert!(!p.key.0.is_empty(), "a problem names no key: {}", p.message);
                let key = p.key.to_string();
                assert!(
                    !key.is_empty(),
                    "a problem names an empty key: {}",
                    p.message
                );
                assert!(rendered.contains(&key), "the message leaves out {key}");
                if let Some(var) = &p.from_env {
                    assert!(env.iter().any(|(k, _)| k == var), "{var} was not set");
                }
            }
        }
    }
});
