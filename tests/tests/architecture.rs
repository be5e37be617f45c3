//! Architecture invariants that a compiler does not check, kept true by `cargo metadata`.

use std::process::Command;

/// Workers and the dashboard depend on `mate-protocol`, never on each other or on `mate`.
#[test]
fn dependencies_point_one_way() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let packages = meta["packages"].as_array().expect("packages");
    let workspace: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    for leaf in [
        "mate-protocol",
        "mate-worker-llm",
        "mate-worker-bridge",
        "mate-tui",
    ] {
        let package = packages
            .iter()
            .find(|p| p["name"] == leaf)
            .unwrap_or_else(|| panic!("{leaf} is a workspace member"));
        let internal: Vec<&str> = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null()) // normal dependencies, not dev/build
            .filter_map(|d| d["name"].as_str())
            .filter(|name| workspace.contains(name))
            .collect();
        let allowed: &[&str] = if leaf == "mate-protocol" {
            &[]
        } else {
            &["mate-protocol"]
        };
        assert_eq!(internal, allowed, "{leaf} may depend only on {allowed:?}");
    }
}

/// The `mate` library's top-level modules and the ones each refers to (`crate::name`, or
/// `crate::{a, b::c}`), from its sources. The binary (`main.rs`, `cli/`) is left out.
fn library_modules() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../supervisor/src");
    let mut graph = std::collections::BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(&src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default()
                .trim_end_matches(".rs")
                .to_string();
            if matches!(top.as_str(), "main" | "cli" | "lib") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read");
                let refs: &mut std::collections::BTreeSet<String> =
                    graph.entry(top.clone()).or_default();
                refs.extend(crate_refs(&text).into_iter().filter(|r| *r != top));
            }
        }
    }
    graph
}

/// The top-level module names after each `crate::` in `text`.
fn crate_refs(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the names at the group's first level.
            let mut depth = 1;
            let mut expect_name = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_name = true,
                    c if depth == 1 && expect_name && c.is_ascii_alphabetic() => {
                        out.push(ident(&group[i..]));
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|name| !name.is_empty() && name != "self");
    out
}

/// A cycle in `graph`, if there is one, as the path that closes it.
fn find_cycle(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// Inside the supervisor crate, imports point one way: the loop (`supervisor`) uses the
/// server, the stores (`store`: session, journal) and the GPU modules (`gpu`: probe, gguf,
/// ladder, pressure); the server knows only the event type; the stores, the GPU modules, the
/// restart policy and the cues know nothing of either. No module cycle.
#[test]
fn modules_of_the_supervisor_crate_point_one_way() {
    let graph = library_modules();
    assert!(graph.contains_key("supervisor") && graph.contains_key("server"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" → "));
    }
    let refs = |module: &str| graph.get(module).cloned().unwrap_or_default();
    assert!(
        !refs("server").contains("supervisor"),
        "the server depends on the event type, not on the loop: {:?}",
        refs("server")
    );
    for leaf in ["store", "gpu", "policy", "cues", "event", "statedir"] {
        let wrong: Vec<_> = refs(leaf)
            .into_iter()
            .filter(|r| matches!(r.as_str(), "supervisor" | "server" | "bench" | "direct"))
            .collect();
        assert!(wrong.is_empty(), "{leaf} must not depend on {wrong:?}");
    }
}

#[test]
fn the_module_graph_reader_sees_grouped_imports_and_cycles() {
    let refs =
        crate_refs("use crate::{config::Settings, gpu::{self, X}, ladder};\ncrate::cues::f()");
    assert_eq!(refs, ["config", "gpu", "ladder", "cues"]);
    let graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_string(), [to.to_string()].into()))
        .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
