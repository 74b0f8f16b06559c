//! `mcp-engine plugin new` and `plugin build`: every world in Rust and in
//! Python scaffolds a project that passes its own tests, builds into a
//! component the engine accepts as that world, and works live in a
//! conversation.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use mcp_engine::proto::admin::UploadPluginRequest;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_mcp-engine");
const WORLDS: [&str; 5] = ["condition", "action", "tool", "state-type", "intent"];

/// A command with the outer cargo's settings removed: they are for this
/// test, not for the plugin projects it builds.
fn command(program: &str, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(var);
    }
    // The projects share one target folder, so their dependencies build once.
    command.env(
        "CARGO_TARGET_DIR",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target"),
    );
    command
}

fn succeeded(what: &str, output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Scaffolds, tests and builds one plugin; returns the component's path.
fn scaffold(root: &Path, world: &str, language: &str) -> PathBuf {
    let name = format!("my-{world}-{language}");
    let created = succeeded(
        &format!("plugin new {name}"),
        command(BIN, root)
            .args(["plugin", "new", "--world", world, "--lang", language, &name])
            .output()
            .unwrap(),
    );
    assert!(created.contains(&format!("a {world} plugin")), "{created}");
    let dir = root.join(&name);
    let tests = match language {
        "rust" => command("cargo", &dir)
            .args(["test", "--offline"])
            .output()
            .unwrap(),
        _ => command("python3", &dir)
            .args(["-m", "unittest", "test_app"])
            .output()
            .unwrap(),
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&tests.stdout),
        String::from_utf8_lossy(&tests.stderr)
    );
    assert!(
        tests.status.success(),
        "{name}'s own tests failed:\n{report}"
    );
    assert!(
        report.contains("test result: ok") || report.contains("\nOK"),
        "{report}"
    );
    assert!(
        !report.contains("warning"),
        "{name} builds with warnings:\n{report}"
    );

    let built = succeeded(
        &format!("plugin build of {name}"),
        command(BIN, &dir)
            .args(["plugin", "build"])
            .output()
            .unwrap(),
    );
    let component = PathBuf::from(built.lines().last().unwrap().trim());
    assert!(component.is_file(), "{built}");
    component
}

fn python_available() -> bool {
    let available = Command::new("componentize-py")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var("MCP_REQUIRE_PYTHON_PLUGINS").as_deref() != Ok("1"),
            "componentize-py is required (MCP_REQUIRE_PYTHON_PLUGINS=1)"
        );
        eprintln!("componentize-py is not installed: the Python scaffolds are not tried");
    }
    available
}

#[tokio::test]
async fn every_world_scaffolds_tests_builds_and_runs_live() {
    let root = std::env::temp_dir().join(format!("mcp-scaffold-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let mut languages = vec!["rust"];
    if python_available() {
        languages.push("python");
    }
    let mut components = Vec::new();
    for language in &languages {
        for world in WORLDS {
            components.push((world, *language, scaffold(&root, world, language)));
        }
    }

    // The engine takes each as the world it was made for.
    let engine = start(HashMap::new()).await;
    let (mut admin, mut client) = clients(&engine).await;
    let (tenant, key) = new_tenant(&mut admin, "scaffolds", &[]).await;
    for (world, language, path) in &components {
        let name = format!("my-{world}-{language}");
        admin
            .upload_plugin(authed(
                UploadPluginRequest {
                    tenant_id: tenant.clone(),
                    name: name.clone(),
                    version: "0.1.0".into(),
                    world: world.to_string(),
                    component: std::fs::read(path).unwrap(),
                    ..Default::default()
                },
                &key,
            ))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    // Live: a flow routed by the scaffolded classifier, through the
    // scaffolded condition, action, tool and state type.
    let language = languages.last().unwrap();
    let plugin = |world: &str| format!("my-{world}-{language}");
    let flow = json!({
        "flow_id": "scaffolded", "name": "Scaffolded", "version": "1", "initial_state": "route",
        "states": {
            "route": {
                "type": "intent",
                "config": { "classifier": plugin("intent"), "confidence_threshold": 0.6 },
                "transitions": [
                    { "condition": "intent_match", "condition_value": "greeting", "target_state": "greet" },
                    { "condition": "default", "target_state": "route" }
                ]
            },
            "greet": {
                "type": "response",
                "config": { "response_templates": { "default": "Where to?" } },
                "entry_actions": [ { "type": "plugin", "plugin": plugin("action"), "args": { "greeting": "Welcome back" } } ],
                "transitions": [ { "condition": "any_input", "target_state": "distance" } ]
            },
            "distance": {
                "type": "slot_filling",
                "config": {
                    "required_slots": ["distance"],
                    "validation_rules": { "distance": "integer:0..100" },
                    "prompts": { "distance": "How many km away are you?" }
                },
                "transitions": [
                    { "condition": "plugin", "plugin": plugin("condition"), "args": { "slot": "distance" }, "target_state": "quote" }
                ]
            },
            "quote": {
                "type": "integration",
                "config": {
                    "integration_id": plugin("tool"),
                    "request_mapping": { "distance_km": "slots.distance" },
                    "response_mapping": { "fee": "result.fee" }
                },
                "transitions": [ { "condition": "integration_success", "target_state": "confirm" } ]
            },
            "confirm": {
                "type": format!("plugin:{}", plugin("state-type")),
                "config": { "question": "Shall I go ahead?" },
                "transitions": [
                    { "condition": "expression", "expression": "state.outcome == 'yes'", "target_state": "done" },
                    { "condition": "expression", "expression": "state.outcome == 'no'", "target_state": "route" }
                ]
            },
            "done": { "type": "end", "config": { "message": "On its way, fee {{ variables.fee }}." } }
        }
    });
    publish(&mut admin, &key, &tenant, &flow).await;
    let mut say = async |text: &str| {
        let response = client
            .process_message(authed(message(&tenant, "live", text), &key))
            .await
            .unwrap()
            .into_inner();
        let status = response.status.unwrap();
        assert!(status.success, "{text:?}: {}", status.message);
        response.response.unwrap().text
    };
    say("start").await;
    assert_eq!(say("hello there").await, "Welcome back, there!\nWhere to?");
    assert_eq!(say("let's go").await, "How many km away are you?");
    assert_eq!(say("4").await, "Shall I go ahead?");
    assert_eq!(
        say("maybe").await,
        "Please answer yes or no. Shall I go ahead?"
    );
    assert_eq!(say("yes").await, "On its way, fee 4.0.");
    drop(engine);
    let _ = std::fs::remove_dir_all(root);
}
