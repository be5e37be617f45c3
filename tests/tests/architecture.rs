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
