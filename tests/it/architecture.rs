//! The module structure of `src/`, checked from the source text
//! (docs/architecture.md): `config` is the bottom layer and imports nothing
//! else from the crate, and the top-level modules import each other without
//! a cycle. Test code (`#[cfg(test)]` items) may reach anywhere, like a
//! dev-dependency, so it is left out of the import graph. No production
//! function is longer than 80 lines unless a `// Long: <reason>` comment
//! above it says why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// One `crate::…` or `super::…` path found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    /// The module the path is written in, from the crate root
    /// (`["config", "validate"]`, plus any inline `mod` around it).
    module: Vec<String>,
    /// The path as written: `crate` or one or more `super`, then names.
    path: Vec<String>,
    /// Whether it sits inside a `#[cfg(test)]` item.
    in_test: bool,
}

impl Reference {
    /// The path from the crate root it names, or `None` when `super`
    /// climbs above the crate root.
    fn resolved(&self) -> Option<Vec<String>> {
        let first = self.path.first()?;
        if first == "crate" {
            return Some(self.path.iter().skip(1).cloned().collect());
        }
        let ups = self.path.iter().take_while(|s| *s == "super").count();
        let kept = self.module.len().checked_sub(ups)?;
        let mut out: Vec<String> = self.module.iter().take(kept).cloned().collect();
        out.extend(self.path.iter().skip(ups).cloned());
        Some(out)
    }
}

fn is_colon(t: Option<&TokenTree>) -> bool {
    matches!(t, Some(TokenTree::Punct(p)) if p.as_char() == ':')
}

fn is_cfg_test(t: Option<&TokenTree>) -> bool {
    match t {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Bracket => {
            let text: String = g
                .stream()
                .to_string()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            text == "cfg(test)"
        }
        _ => false,
    }
}

/// The paths a `use` tree group (`{a, b::c, d::{e, f}}`) names, each
/// appended to `prefix`.
fn group_paths(prefix: &[String], stream: TokenStream, out: &mut Vec<Vec<String>>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    for part in tokens.split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ',')) {
        let mut path = prefix.to_vec();
        let mut nested = None;
        for t in part {
            match t {
                TokenTree::Ident(id) if id == "as" => break,
                TokenTree::Ident(id) => path.push(id.to_string()),
                TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => {
                    nested = Some(g.stream());
                }
                _ => {}
            }
        }
        match nested {
            Some(inner) => group_paths(&path, inner, out),
            None if path.len() > prefix.len() => out.push(path),
            None => {}
        }
    }
}

/// Collects every `crate::…` / `super::…` path in `stream`, tracking inline
/// `mod name { … }` blocks and `#[cfg(test)]` items.
fn walk(stream: TokenStream, module: &[String], in_test: bool, out: &mut Vec<Reference>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    let mut next_is_test = false;
    while let Some(t) = tokens.get(i) {
        match t {
            TokenTree::Punct(p) if p.as_char() == '#' && is_cfg_test(tokens.get(i + 1)) => {
                next_is_test = true;
                i += 2;
                continue;
            }
            TokenTree::Punct(p) if p.as_char() == ';' => next_is_test = false,
            TokenTree::Ident(id) if id == "mod" => {
                if let (Some(TokenTree::Ident(name)), Some(TokenTree::Group(body))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    if body.delimiter() == Delimiter::Brace {
                        let mut inner = module.to_vec();
                        inner.push(name.to_string());
                        walk(body.stream(), &inner, in_test || next_is_test, out);
                        next_is_test = false;
                        i += 3;
                        continue;
                    }
                }
            }
            TokenTree::Ident(id)
                if (id == "crate" || id == "super")
                    && is_colon(tokens.get(i + 1))
                    && is_colon(tokens.get(i + 2))
                    // `$crate::` in a macro is this crate's root too, but
                    // `other::crate` cannot occur; a preceding `::` means
                    // this is not the start of a path.
                    && !(i >= 2 && is_colon(tokens.get(i - 1))) =>
            {
                let mut path = vec![id.to_string()];
                let mut j = i + 1;
                let mut paths = Vec::new();
                loop {
                    if !(is_colon(tokens.get(j)) && is_colon(tokens.get(j + 1))) {
                        paths.push(path.clone());
                        break;
                    }
                    match tokens.get(j + 2) {
                        Some(TokenTree::Ident(next)) => {
                            path.push(next.to_string());
                            j += 3;
                        }
                        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                            group_paths(&path, g.stream(), &mut paths);
                            j += 3;
                            break;
                        }
                        _ => {
                            paths.push(path.clone());
                            break;
                        }
                    }
                }
                for path in paths {
                    out.push(Reference {
                        module: module.to_vec(),
                        path,
                        in_test: in_test || next_is_test,
                    });
                }
                i = j;
                continue;
            }
            TokenTree::Group(g) => {
                // A brace group ends the item an attribute was on (`fn f() {}`,
                // `impl X {}`); the item's own contents are still its.
                walk(g.stream(), module, in_test || next_is_test, out);
                if g.delimiter() == Delimiter::Brace {
                    next_is_test = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// The references in one file's text; `module` is the file's module path.
fn references(text: &str, module: &[String]) -> Vec<Reference> {
    let stream: TokenStream = text
        .parse()
        .unwrap_or_else(|e| panic!("{module:?} does not tokenize: {e:?}"));
    let mut out = Vec::new();
    walk(stream, module, false, &mut out);
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/` (`config/mod.rs` -> `config`).
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// Every library source file (not `main.rs`, a crate of its own) with its
/// references.
fn crate_references() -> Vec<(PathBuf, Vec<Reference>)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|f| !f.ends_with("src/main.rs"))
        .map(|f| {
            let relative = f.strip_prefix(src()).unwrap().to_path_buf();
            let text = std::fs::read_to_string(&f).unwrap();
            let refs = references(&text, &module_of(&relative));
            (relative, refs)
        })
        .collect()
}

/// Edges between top-level modules: (from, to) -> one place that makes it.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn import_graph(files: &[(PathBuf, Vec<Reference>)]) -> Graph {
    let mut graph = Graph::new();
    for (file, refs) in files {
        for r in refs.iter().filter(|r| !r.in_test) {
            let (Some(from), Some(resolved)) = (r.module.first(), r.resolved()) else {
                continue;
            };
            let Some(to) = resolved.first() else { continue };
            if to != from {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to.clone())
                    .or_insert_with(|| format!("src/{}: {}", file.display(), r.path.join("::")));
            }
        }
    }
    graph
}

/// One cycle per strongly connected knot, as the modules in order and the
/// place that makes each edge; empty when the graph has none.
fn cycles(graph: &Graph) -> Vec<Vec<(String, String)>> {
    fn visit(
        node: &str,
        graph: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<(String, String)>>,
    ) {
        stack.push(node.to_string());
        for (next, place) in graph.get(node).into_iter().flatten() {
            if let Some(start) = stack.iter().position(|s| s == next) {
                let mut cycle: Vec<(String, String)> = Vec::new();
                let ring: Vec<&String> = stack.iter().skip(start).collect();
                for (k, m) in ring.iter().enumerate() {
                    let to = ring.get(k + 1).copied().unwrap_or(next);
                    let how = graph
                        .get(m.as_str())
                        .and_then(|e| e.get(to.as_str()))
                        .cloned()
                        .unwrap_or_else(|| place.clone());
                    cycle.push(((*m).clone(), format!("-> {to}   ({how})")));
                }
                found.push(cycle);
            } else if !done.contains(next) {
                visit(next, graph, stack, done, found);
            }
        }
        stack.pop();
        done.insert(node.to_string());
    }
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if !done.contains(node) {
            visit(node, graph, &mut Vec::new(), &mut done, &mut found);
        }
    }
    found
}

fn render(cycle: &[(String, String)]) -> String {
    cycle
        .iter()
        .map(|(m, edge)| format!("  {m} {edge}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn module(path: &str) -> Vec<String> {
    path.split("::").map(str::to_string).collect()
}

#[test]
fn no_file_under_src_config_imports_another_part_of_the_crate() {
    let files = crate_references();
    let config: Vec<_> = files
        .iter()
        .filter(|(f, _)| f.starts_with("config"))
        .collect();
    assert!(
        config.len() >= 5,
        "expected the config module's files, found {}",
        config.len()
    );
    let mut outside = Vec::new();
    for (file, refs) in config {
        for r in refs {
            let target = r.resolved();
            if target.as_ref().and_then(|t| t.first()).map(String::as_str) != Some("config") {
                outside.push(format!("src/{}: {}", file.display(), r.path.join("::")));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "config is the bottom layer and imports nothing else from the crate \
         (docs/architecture.md); move what it needs into config:\n  {}",
        outside.join("\n  ")
    );
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let graph = import_graph(&crate_references());
    // The scanner must see the crate as it is, or the check proves nothing.
    for (from, to) in [("app", "config"), ("gateway", "session"), ("jws", "jwk")] {
        assert!(
            graph.get(from).is_some_and(|e| e.contains_key(to)),
            "the scanner missed {from} -> {to}; graph: {graph:#?}"
        );
    }
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "the top-level modules import each other in a cycle; break each (docs/architecture.md):\n{}",
        found
            .iter()
            .map(|c| render(c))
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

#[test]
fn the_scanner_reads_grouped_and_nested_use_trees() {
    let refs = references(
        "use crate::{a, b::{c, d as e}, f::g};\nfn x() { crate::h::i(); }",
        &module("m"),
    );
    let paths: Vec<String> = refs.iter().map(|r| r.path.join("::")).collect();
    assert_eq!(
        paths,
        [
            "crate::a",
            "crate::b::c",
            "crate::b::d",
            "crate::f::g",
            "crate::h::i"
        ]
    );
}

#[test]
fn the_scanner_leaves_test_code_out_of_the_graph_and_not_strings_or_comments() {
    let text = r#"
        use crate::kept;
        // use crate::commented;
        const S: &str = "crate::quoted::x";
        #[cfg(test)]
        mod tests { use crate::only_tests; }
        #[cfg(test)]
        fn helper() { crate::only_helper::x(); }
        fn after() { crate::after_tests::y(); }
    "#;
    let files = vec![(PathBuf::from("m.rs"), references(text, &module("m")))];
    let graph = import_graph(&files);
    let to: Vec<&String> = graph
        .get("m")
        .map(|e| e.keys().collect())
        .unwrap_or_default();
    assert_eq!(to, ["after_tests", "kept"]);
}

#[test]
fn the_scanner_resolves_super_paths_and_flags_climbing_out_of_config() {
    let refs = references(
        "use super::model::X;\nmod inner { use super::super::super::jwks::Y; }",
        &module("config::validate"),
    );
    let resolved: Vec<Vec<String>> = refs.iter().filter_map(Reference::resolved).collect();
    assert_eq!(resolved, [module("config::model::X"), module("jwks::Y")]);
}

#[test]
fn the_cycle_check_names_every_module_of_a_cycle_and_where_each_edge_is() {
    let files = vec![
        (
            PathBuf::from("a.rs"),
            references("use crate::b::X;", &module("a")),
        ),
        (
            PathBuf::from("b/mod.rs"),
            references("use crate::c::Y;", &module("b")),
        ),
        (
            PathBuf::from("c.rs"),
            references("fn f() { crate::a::z(); }", &module("c")),
        ),
        (
            PathBuf::from("d.rs"),
            references("use crate::a::W;", &module("d")),
        ),
    ];
    let found = cycles(&import_graph(&files));
    assert_eq!(found.len(), 1, "{found:?}");
    let text = render(&found[0]);
    assert_eq!(
        text,
        "  a -> b   (src/a.rs: crate::b::X)\n  b -> c   (src/b/mod.rs: crate::c::Y)\n  c -> a   (src/c.rs: crate::a::z)"
    );
}

// ---------------------------------------------------------------------------
// The testkit stays out of the product
// ---------------------------------------------------------------------------

/// Whether production code in `text` names the testkit crate (the same
/// token scan as the clock and RNG checks below).
fn names_testkit_outside_tests(text: &str) -> bool {
    !names_in_product(text, &["portcullis_testkit"]).is_empty()
}

#[test]
fn no_file_under_src_names_the_testkit_outside_test_code() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    assert!(!files.is_empty());
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| names_testkit_outside_tests(&std::fs::read_to_string(f).unwrap()))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "production code names portcullis_testkit (a dev-dependency: use it in #[cfg(test)] code only): {offenders:?}"
    );
}

#[test]
fn the_testkit_scan_sees_production_code_and_skips_test_code_and_comments() {
    assert!(names_testkit_outside_tests(
        "use portcullis_testkit::vendors;\nfn f() {}"
    ));
    assert!(names_testkit_outside_tests(
        "#[cfg(test)]\nmod tests {}\nfn f() { portcullis_testkit::x(); }"
    ));
    assert!(!names_testkit_outside_tests(
        "#[cfg(test)]\nmod tests { use portcullis_testkit::vendors; }\n\
         // portcullis_testkit in a comment\nfn f() { let _ = \"portcullis_testkit\"; }"
    ));
    assert!(!names_testkit_outside_tests(
        "#[cfg(test)]\nuse portcullis_testkit::oauth1;\nfn f() {}"
    ));
}

#[test]
fn the_products_normal_dependency_tree_holds_no_testkit() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = std::process::Command::new(&cargo)
        .args(["tree", "-e", "normal", "-p", "portcullis", "--locked"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            println!("skipped: cargo ({cargo}) is not runnable here: {error}");
            return;
        }
    };
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        tree.lines().any(|l| l.starts_with("portcullis v")),
        "cargo tree printed no portcullis: {tree}"
    );
    assert!(
        tree.lines().any(|l| l.starts_with("hyper v")),
        "the tree lists the product's dependencies: {tree}"
    );
    assert!(
        !tree.contains("portcullis-testkit"),
        "the product's normal dependencies include the testkit:\n{tree}"
    );
}

/// The identifiers and `::` of `stream` outside `#[cfg(test)]` items, in
/// order, one string each (comments and string literals are not tokens).
fn product_words(stream: TokenStream, out: &mut Vec<String>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    let mut skip_next_item = false;
    while let Some(t) = tokens.get(i) {
        match t {
            TokenTree::Punct(p) if p.as_char() == '#' && is_cfg_test(tokens.get(i + 1)) => {
                skip_next_item = true;
                i += 2;
                continue;
            }
            TokenTree::Punct(p) if p.as_char() == ';' => {
                skip_next_item = false;
                out.push(";".into());
            }
            TokenTree::Punct(p) if p.as_char() == ':' && is_colon(tokens.get(i + 1)) => {
                if !skip_next_item {
                    out.push("::".into());
                }
                i += 2;
                continue;
            }
            TokenTree::Ident(id) if !skip_next_item => out.push(id.to_string()),
            TokenTree::Group(g) => {
                if !skip_next_item {
                    product_words(g.stream(), out);
                }
                // A brace group ends the item a `#[cfg(test)]` was on.
                if g.delimiter() == Delimiter::Brace {
                    skip_next_item = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// Where `text` names one of `banned` (each a path like `SystemTime::now`)
/// outside test code.
fn names_in_product(text: &str, banned: &[&str]) -> Vec<String> {
    let stream: TokenStream = text.parse().expect("tokenizes");
    let mut words = Vec::new();
    product_words(stream, &mut words);
    banned
        .iter()
        .filter(|b| {
            let want: Vec<String> = b
                .split("::")
                .flat_map(|w| ["::".to_string(), w.to_string()])
                .skip(1)
                .collect();
            words.windows(want.len()).any(|w| w == want.as_slice())
        })
        .map(|b| b.to_string())
        .collect()
}

/// Every product file under `src/` (with `main.rs`) that names one of
/// `banned`, except `owner`: "file: names".
fn product_files_naming(banned: &[&str], owner: &str) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    assert!(files.len() > 20, "found only {} source files", files.len());
    files
        .iter()
        .filter_map(|f| {
            let relative = f.strip_prefix(src()).unwrap();
            let shown = relative.to_string_lossy().replace('\\', "/");
            if shown == owner {
                return None;
            }
            let found = names_in_product(&std::fs::read_to_string(f).unwrap(), banned);
            (!found.is_empty()).then(|| format!("src/{shown}: {}", found.join(", ")))
        })
        .collect()
}

#[test]
fn only_src_clock_rs_reads_the_wall_clock() {
    let found = product_files_naming(
        &["SystemTime::now", "jsonwebtoken::get_current_timestamp"],
        "clock.rs",
    );
    assert!(
        found.is_empty(),
        "the wall clock is read only in src/clock.rs; take the `Clock` the state \
         carries (or `now` as a parameter):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn only_src_random_rs_asks_for_random_values() {
    let banned = [
        "thread_rng",
        "OsRng",
        "aws_lc_rs::rand",
        "rand::random",
        "SystemRandom",
    ];
    let found = product_files_naming(&banned, "random.rs");
    assert!(
        found.is_empty(),
        "random values come only from src/random.rs (`random::fill`, `random::token`, \
         `random::u64`):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_clock_and_rng_scan_sees_product_code_but_not_tests_comments_or_strings() {
    let text = r#"
        use std::time::SystemTime;
        // SystemTime::now() in a comment
        const S: &str = "rand::thread_rng()";
        #[cfg(test)]
        mod tests { fn t() { let _ = rand::rngs::OsRng; } }
        fn f() -> SystemTime { SystemTime::now() }
        fn g() { let _ = rand::random::<u64>(); }
    "#;
    let banned = ["SystemTime::now", "thread_rng", "OsRng", "rand::random"];
    assert_eq!(
        names_in_product(text, &banned),
        ["SystemTime::now", "rand::random"]
    );
    assert!(names_in_product("fn f() { std::time::SystemTime::UNIX_EPOCH; }", &banned).is_empty());
}

/// The most lines a production function may span, from its `fn` line to its
/// closing brace, without a `// Long: <reason>` comment above it.
const MAX_FUNCTION_LINES: usize = 80;

/// One production function as the source text spans it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Function {
    /// Its name.
    name: String,
    /// The line of its `fn` keyword (1-based).
    line: usize,
    /// Lines from the `fn` line to the closing brace, both counted.
    lines: usize,
    /// Whether a `// Long: …` comment sits directly above the item (above
    /// its attributes and doc comment, if any).
    marked: bool,
}

/// Whether the line above `item_line` (1-based) is a `// Long:` comment.
fn marked_long(text_lines: &[&str], item_line: usize) -> bool {
    item_line
        .checked_sub(2)
        .and_then(|above| text_lines.get(above))
        .is_some_and(|l| l.trim_start().starts_with("// Long:"))
}

/// Collects every function with a body in `stream`: free functions, methods
/// in `impl` and `trait` blocks, inline modules, functions nested in bodies;
/// `#[cfg(test)]` items are left out.
fn functions_in(stream: TokenStream, text_lines: &[&str], out: &mut Vec<Function>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut i = 0;
    let mut next_is_test = false;
    // The first line of the item being read: its first attribute or keyword.
    let mut item_start: Option<usize> = None;
    while let Some(t) = tokens.get(i) {
        if item_start.is_none() {
            item_start = Some(t.span().start().line);
        }
        match t {
            TokenTree::Punct(p) if p.as_char() == '#' && is_cfg_test(tokens.get(i + 1)) => {
                next_is_test = true;
                i += 2;
                continue;
            }
            TokenTree::Punct(p) if p.as_char() == ';' => {
                next_is_test = false;
                item_start = None;
            }
            TokenTree::Ident(id) if id == "fn" => {
                if let Some(TokenTree::Ident(name)) = tokens.get(i + 1) {
                    let mut j = i + 2;
                    let body = loop {
                        match tokens.get(j) {
                            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                                break Some(g.clone())
                            }
                            Some(TokenTree::Punct(p)) if p.as_char() == ';' => break None,
                            None => break None,
                            Some(_) => j += 1,
                        }
                    };
                    if let Some(body) = body {
                        if !next_is_test {
                            let line = id.span().start().line;
                            out.push(Function {
                                name: name.to_string(),
                                line,
                                lines: body.span().end().line + 1 - line,
                                marked: marked_long(text_lines, item_start.unwrap_or(line)),
                            });
                            functions_in(body.stream(), text_lines, out);
                        }
                        next_is_test = false;
                        item_start = None;
                        i = j + 1;
                        continue;
                    }
                }
            }
            TokenTree::Group(g) => {
                if !next_is_test {
                    functions_in(g.stream(), text_lines, out);
                }
                if g.delimiter() == Delimiter::Brace {
                    next_is_test = false;
                    item_start = None;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// The functions of one file's text.
fn functions(text: &str) -> Vec<Function> {
    let stream: TokenStream = text
        .parse()
        .unwrap_or_else(|e| panic!("does not tokenize: {e:?}"));
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    functions_in(stream, &lines, &mut out);
    out
}

/// Every production function over the limit in `src/`, as
/// `(path name, path:line name (N lines), marked)`.
fn long_functions() -> Vec<(String, String, bool)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let relative = Path::new("src").join(file.strip_prefix(src()).unwrap());
        let text = std::fs::read_to_string(&file).unwrap();
        for f in functions(&text)
            .into_iter()
            .filter(|f| f.lines > MAX_FUNCTION_LINES)
        {
            out.push((
                format!("{} {}", relative.display(), f.name),
                format!(
                    "{}:{} {} ({} lines)",
                    relative.display(),
                    f.line,
                    f.name,
                    f.lines
                ),
                f.marked,
            ));
        }
    }
    out
}

#[test]
fn no_production_function_is_longer_than_80_lines_without_a_reason() {
    let long = long_functions();
    let unexplained: Vec<&str> = long
        .iter()
        .filter(|(_, _, marked)| !marked)
        .map(|(_, place, _)| place.as_str())
        .collect();
    assert!(
        unexplained.is_empty(),
        "these functions are longer than {MAX_FUNCTION_LINES} lines; split each into steps named \
         by their job, or say why it reads best long in a `// Long: <reason>` comment on the \
         line above it (docs/architecture.md):\n  {}",
        unexplained.join("\n  ")
    );
}

#[test]
fn the_length_scanner_counts_from_the_fn_line_to_the_closing_brace() {
    let body: String = (0..85).map(|k| format!("    let _x{k} = {k};\n")).collect();
    let text = format!(
        "fn short() {{\n    let _ = 1;\n}}\n\
         impl S {{\n    /// Docs.\n    pub fn long(&self) {{\n{body}    }}\n}}\n\
         // Long: a flat table.\n/// Docs.\n#[inline]\nfn explained() {{\n{body}}}\n\
         #[cfg(test)]\nfn test_helper() {{\n{body}}}\n\
         #[cfg(test)]\nmod tests {{\n    fn inside() {{\n{body}    }}\n}}\n\
         mod inner {{\n    trait T {{\n        fn declared(&self);\n        fn provided(&self) {{ }}\n    }}\n}}\n"
    );
    let found: Vec<(String, usize, usize, bool)> = functions(&text)
        .into_iter()
        .map(|f| (f.name, f.line, f.lines, f.marked))
        .collect();
    assert_eq!(
        found,
        [
            ("short".to_string(), 1, 3, false),
            ("long".to_string(), 6, 87, false),
            ("explained".to_string(), 97, 87, true),
            ("provided".to_string(), 365, 1, false),
        ]
    );
}
