//! The operator's guide (docs/deploying.md) is tested where it can be: every
//! config recipe under docs/recipes/, and the config inside the Kubernetes
//! recipe, passes the same validation as `portcullis check`. The docs stay
//! self-contained: links from README.md and docs/ resolve inside the
//! repository, and every security case the code and tests cite is defined in
//! docs/security.md, naming tests that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

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

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// README.md and every Markdown file under docs/, as paths relative to the repository.
fn markdown_files() -> Vec<String> {
    let mut found = vec!["README.md".to_string()];
    let mut dirs = vec![repo().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                let rel = path.strip_prefix(repo()).unwrap();
                found.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found.sort();
    found
}

/// One line of Markdown split into its prose (inline code blanked out) and
/// its inline code spans; lines inside fenced code blocks yield nothing.
fn prose_and_code(text: &str) -> Vec<(usize, String, Vec<String>)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut prose = String::new();
        let mut spans = Vec::new();
        let mut parts = line.split('`');
        if let Some(first) = parts.next() {
            prose.push_str(first);
        }
        let rest: Vec<&str> = parts.collect();
        // An unpaired backtick is text, not the start of a span.
        let paired = rest.len() - rest.len() % 2;
        for (k, part) in rest.iter().enumerate() {
            if k < paired && k % 2 == 0 {
                spans.push(part.to_string());
                prose.push(' ');
            } else {
                prose.push_str(part);
            }
        }
        out.push((i + 1, prose, spans));
    }
    out
}

/// Link targets on a line of prose: inline `[text](target)` and reference
/// definitions `[label]: target`.
fn link_targets(prose: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = prose;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after
            .find(|c: char| c == ')' || c.is_whitespace())
            .unwrap_or(after.len());
        targets.push(after[..end].trim_matches(['<', '>']).to_string());
        rest = &after[end..];
    }
    let t = prose.trim_start();
    if t.starts_with('[') {
        if let Some(at) = t.find("]: ") {
            let target = t[at + 3..].split_whitespace().next().unwrap_or("");
            targets.push(target.to_string());
        }
    }
    targets
}

/// `target` resolved against the directory of `from` (both relative to the
/// repository), or `None` when it climbs out of the repository.
fn resolve(from: &str, target: &str) -> Option<String> {
    let mut parts: Vec<String> = if target.starts_with('/') {
        Vec::new()
    } else {
        Path::new(from)
            .parent()
            .map(|d| {
                d.components()
                    .map(|c| c.as_os_str().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    for c in Path::new(target.trim_start_matches('/')).components() {
        match c {
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(n) => parts.push(n.to_string_lossy().to_string()),
            _ => {}
        }
    }
    Some(parts.join("/"))
}

/// The anchors GitHub gives a Markdown file's headings: lower case, spaces
/// to `-`, punctuation (backticks included) dropped.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
        }
        if fenced || !t.starts_with('#') {
            continue;
        }
        let slug: String = t
            .trim_start_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        found.insert(slug);
    }
    found
}

/// Every problem with the links of one Markdown file.
fn link_problems(file: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (line, prose, spans) in prose_and_code(text) {
        // A file named in code outside the repository (`../shared/DESIGN.md`);
        // attack strings such as `../../dev/null` name no file and pass.
        for span in &spans {
            let names_a_file = span
                .rsplit('/')
                .next()
                .is_some_and(|n| n.contains('.') && !n.trim_matches('.').is_empty());
            if span.starts_with("../") && names_a_file && resolve(file, span).is_none() {
                problems.push(format!(
                    "{file}:{line}: `{span}` names a path outside the repository"
                ));
            }
        }
        for target in link_targets(&prose) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                Some(file.to_string())
            } else {
                resolve(file, path)
            };
            let Some(resolved) = resolved else {
                problems.push(format!(
                    "{file}:{line}: ({target}) leads outside the repository"
                ));
                continue;
            };
            let on_disk = repo().join(&resolved);
            if !on_disk.exists() {
                problems.push(format!(
                    "{file}:{line}: ({target}) names {resolved}, which does not exist"
                ));
                continue;
            }
            if let Some(fragment) = fragment {
                if resolved.ends_with(".md") {
                    let body = std::fs::read_to_string(&on_disk).unwrap();
                    if !anchors(&body).contains(fragment) {
                        problems.push(format!(
                            "{file}:{line}: ({target}): {resolved} has no heading #{fragment}"
                        ));
                    }
                }
            }
        }
    }
    problems
}

#[test]
fn readme_and_docs_link_only_to_files_inside_the_repository_that_exist() {
    let files = markdown_files();
    for must in [
        "README.md",
        "docs/design.md",
        "docs/security.md",
        "docs/deploying.md",
    ] {
        assert!(
            files.iter().any(|f| f == must),
            "{must} is missing: {files:?}"
        );
    }
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        problems.extend(link_problems(file, &text));
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_link_check_catches_a_path_outside_the_repository_and_a_missing_file() {
    let text = "The contract is `../shared/DESIGN.md`; a hostile kid is `../../dev/null`.\n\
                See [the design](../shared/DESIGN.md), [gone](docs/nothing.md),\n\
                [a heading](docs/design.md#no-such-heading) and [fine](docs/design.md#sessions).\n\
                ```\n[in a fence](../../etc/passwd)\n```\n";
    let problems = link_problems("README.md", text);
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(problems
        .iter()
        .any(|p| p.contains("`../shared/DESIGN.md` names a path outside")));
    assert!(problems
        .iter()
        .any(|p| p.contains("(../shared/DESIGN.md) leads outside")));
    assert!(problems
        .iter()
        .any(|p| p.contains("docs/nothing.md, which does not exist")));
    assert!(problems
        .iter()
        .any(|p| p.contains("no heading #no-such-heading")));
}

/// The case families of docs/security.md; an ID is `FAMILY-NN`.
const FAMILIES: [&str; 7] = ["OIDC", "OA2", "OA1", "JWT", "JWKS", "SES", "PRX"];

/// Case IDs a text cites: `PRX-06` anywhere, and `prx06` / `ses_06` as a
/// part of an identifier (test names).
fn cited_ids(text: &str) -> BTreeSet<String> {
    let upper: Vec<String> = FAMILIES.iter().map(|f| format!("{f}-")).collect();
    let lower: Vec<String> = FAMILIES.iter().map(|f| f.to_lowercase()).collect();
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    let mut ids = BTreeSet::new();
    let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    // Every ID has two digits: words without one are passed over cheaply.
    for word in words.filter(|w| w.bytes().any(|b| b.is_ascii_digit())) {
        // Upper case with a hyphen, as prose and comments write them.
        for (family, pattern) in FAMILIES.iter().zip(&upper) {
            let mut from = 0;
            while let Some(at) = word[from..].find(pattern.as_str()).map(|i| i + from) {
                let digits_at = at + pattern.len();
                let digits = word.get(digits_at..digits_at + 2).unwrap_or("");
                let before_ok = at == 0 || !word.as_bytes()[at - 1].is_ascii_alphanumeric();
                let after_ok = !word
                    .as_bytes()
                    .get(digits_at + 2)
                    .is_some_and(|b| b.is_ascii_alphanumeric());
                if before_ok && two_digits(digits) && after_ok {
                    ids.insert(format!("{family}-{digits}"));
                }
                from = digits_at;
            }
        }
        // Lower case inside identifiers: `prx06_…`, `oa2_05_…`, `…_jwt24_…`.
        let tokens: Vec<&str> = word.split(['_', '-']).collect();
        for (i, token) in tokens.iter().enumerate() {
            for (family, name) in FAMILIES.iter().zip(&lower) {
                let Some(digits) = token.strip_prefix(name.as_str()) else {
                    continue;
                };
                if two_digits(digits) {
                    ids.insert(format!("{family}-{digits}"));
                } else if digits.is_empty() && tokens.get(i + 1).is_some_and(|d| two_digits(d)) {
                    ids.insert(format!("{family}-{}", tokens[i + 1]));
                }
            }
        }
    }
    ids
}

/// The case IDs docs/security.md defines (`- **PRX-06** …`), with how often.
fn defined_ids() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(repo().join("docs/security.md")).unwrap();
    let mut ids = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("- **") {
            // Other bold list items (`- **Refused sign-in**`) are prose, not cases.
            if let Some((id, _)) = rest.split_once("**") {
                if cited_ids(id).contains(id) {
                    *ids.entry(id.to_string()).or_insert(0) += 1;
                }
            }
        }
    }
    ids
}

/// Every `.rs` and `.mjs` file under src/ and tests/ (dependencies left out).
fn code_files() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![repo().join("src"), repo().join("tests")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if name != "node_modules" && !name.starts_with('.') {
                    dirs.push(path);
                }
            } else if name.ends_with(".rs") || name.ends_with(".mjs") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn every_case_id_cited_in_src_and_tests_is_defined_once_in_docs_security_md() {
    let defined = defined_ids();
    let twice: Vec<_> = defined.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "defined more than once: {twice:?}");
    let mut undefined: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut cited = 0;
    for path in code_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        for id in cited_ids(&text) {
            cited += 1;
            if !defined.contains_key(&id) {
                let rel = path.strip_prefix(repo()).unwrap().display().to_string();
                undefined.entry(id).or_default().insert(rel);
            }
        }
    }
    // The code cites well over a hundred cases; none found means the scan broke.
    assert!(cited > 100, "only {cited} citations found");
    assert!(
        undefined.is_empty(),
        "cited but not defined in docs/security.md: {undefined:#?}"
    );
}

#[test]
fn case_ids_are_found_in_prose_and_in_test_names_and_nowhere_else() {
    let found = cited_ids(
        "// PRX-06: one path. (SES-16) fn oa2_05_oa2_12_flow() fn jwt23_jwt24_aud() \
         fn ses_01_cookie() async fn prx19_slow() AES-256 UTF-16 XPRX-01 PRX-123 jwt_max_age",
    );
    let want: BTreeSet<String> = [
        "PRX-06", "SES-16", "OA2-05", "OA2-12", "JWT-23", "JWT-24", "SES-01", "PRX-19",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(found, want);
}

#[test]
fn every_test_docs_security_md_names_exists() {
    let text = std::fs::read_to_string(repo().join("docs/security.md")).unwrap();
    let mut named = 0;
    let mut missing = Vec::new();
    for (line, _, spans) in prose_and_code(&text) {
        for span in spans {
            let Some((file, name)) = span.split_once("::") else {
                continue;
            };
            if !(file.starts_with("src/") || file.starts_with("tests/"))
                || !(file.ends_with(".rs") || file.ends_with(".mjs"))
            {
                continue;
            }
            named += 1;
            let body = std::fs::read_to_string(repo().join(file)).unwrap_or_default();
            let there = if file.ends_with(".rs") {
                [format!("fn {name}("), format!("fn {name}<")]
                    .iter()
                    .any(|f| body.contains(f.as_str()))
            } else {
                ['\'', '"', '`']
                    .iter()
                    .any(|q| body.contains(&format!("{q}{name}{q}")))
            };
            if !there {
                missing.push(format!("docs/security.md:{line}: {span}"));
            }
        }
    }
    assert!(named > 100, "only {named} tests named");
    assert!(
        missing.is_empty(),
        "named tests that do not exist:\n{}",
        missing.join("\n")
    );
}
