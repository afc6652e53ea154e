//! The operator's guide (docs/deploying.md) is tested where it can be: every
//! config recipe under docs/recipes/, and the config inside the Kubernetes
//! recipe, passes the same validation as `portcullis check`.

use std::path::{Path, PathBuf};

use portcullis::config::load_with_env;

use crate::support::SECRET;

fn recipes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/recipes")
}

/// The environment the guide tells the operator to set, with test values:
/// the session secret, the store, and the client secret of each sign-in
/// source the recipe has (naming a source it lacks is itself an error).
fn operator_env(body: &str) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PORTCULLIS_SESSION__SECRETS".to_string(),
            SECRET.to_string(),
        ),
        (
            "PORTCULLIS_STORE__URL".to_string(),
            "sqlite::memory:".to_string(),
        ),
    ];
    for slug in ["google", "github"] {
        if body.contains(&format!("slug = \"{slug}\"")) {
            env.push((
                format!(
                    "PORTCULLIS_SOURCE__{}__CONSUMER_SECRET",
                    slug.to_uppercase()
                ),
                format!("{slug}-client-secret"),
            ));
        }
    }
    env
}

/// Validates one recipe as `check` would; paths that only exist on the
/// operator's machine are pointed at test files first.
fn validate(name: &str, body: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/test-ca.pem");
    let body = body.replace(
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        &ca.display().to_string(),
    );
    let file = dir.path().join(name);
    std::fs::write(&file, &body).unwrap();
    load_with_env(&file, operator_env(&body))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn every_config_recipe_in_the_guide_passes_validation() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(recipes()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let body = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = validate(&name, &body) {
                panic!("docs/recipes/{name} does not pass validation:\n{e}");
            }
            checked.push(name);
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "getting-started.toml",
            "github-actions.toml",
            "kubernetes-tokens.toml"
        ],
        "the guide's config recipes"
    );
}

#[test]
fn the_config_in_the_kubernetes_recipe_passes_validation() {
    let yaml = std::fs::read_to_string(recipes().join("kubernetes.yaml")).unwrap();
    // The ConfigMap's `portcullis.toml: |` block: every line indented deeper than the key.
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != "portcullis.toml: |");
    let key = lines.next().expect("the ConfigMap holds portcullis.toml");
    let indent = key.len() - key.trim_start().len();
    let body: String = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .map(|l| format!("{}\n", l.get(indent + 2..).unwrap_or("")))
        .collect();
    assert!(body.contains("[server]"), "{body}");
    validate("kubernetes.toml", &body).unwrap_or_else(|e| panic!("{e}\n{body}"));
}

#[test]
fn no_example_in_the_guide_carries_a_session_secret() {
    for entry in std::fs::read_dir(recipes()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let l = line.trim_start();
            assert!(
                !(l.starts_with("secrets =") || l.starts_with("secret =")),
                "{} sets a session secret: {line}",
                path.display()
            );
        }
    }
}
