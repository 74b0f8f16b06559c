//! The `mcp-engine` subcommands as a user runs them.

use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-engine");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/flows");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MCP_API_KEY")
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["tenant", "create", "--help"],
        &["flow", "validate", "--help"],
        &["flow", "graph", "--help"],
        &["flow", "test", "--help"],
        &["flow", "publish", "--help"],
        &["plugin", "push", "--help"],
        &["plugin", "list", "--help"],
        &["chat", "--help"],
    ] {
        let output = run(args);
        assert!(output.status.success(), "{args:?}");
        assert!(stdout(&output).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn flow_validate_reports_every_problem_with_its_path() {
    let good = run(&["flow", "validate", &format!("{EXAMPLES}/pizza_order.json")]);
    assert!(good.status.success(), "{}", stdout(&good));
    assert!(stdout(&good).contains("valid"));

    let dir = std::env::temp_dir().join(format!("mcp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{ "flow_id": "x", "name": "x", "version": "1", "initial_state": "nowhere",
             "states": { "a": { "type": "response", "config": { "response_templates": { "default": "hi" } }, "transitions": [ { "condition": "any_input", "target_state": "b" } ] } } }"#,
    )
    .unwrap();
    let output = run(&["flow", "validate", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("initial_state"), "{text}");
    assert!(
        text.contains("states.a.transitions[0].target_state"),
        "{text}"
    );

    std::fs::write(&bad, "not json").unwrap();
    assert_eq!(
        run(&["flow", "validate", bad.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn flow_graph_prints_a_mermaid_state_diagram() {
    let output = run(&["flow", "graph", &format!("{EXAMPLES}/greeting.json")]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.starts_with("stateDiagram-v2\n"), "{text}");
    assert!(text.contains("[*] --> s0"), "{text}");
}

#[test]
fn a_tenant_is_created_and_given_a_flow_and_plugin_from_the_command_line() {
    let data = std::env::temp_dir().join(format!("mcp-cli-serve-{}", std::process::id()));
    let mut server = Command::new(BIN)
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("GRPC_HOST", "127.0.0.1")
        .env("GRPC_PORT", "0")
        .env("HTTP_PORT", "0")
        .env("MCP_DATA_DIR", &data)
        .env("MCP_ADMIN_KEY", "op-key")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut first_line,
    )
    .unwrap();
    let address = first_line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap();
    let server_url = format!("http://{address}");

    let created = run(&[
        "tenant",
        "create",
        "Cli Co",
        "--id",
        "cli-co",
        "--server",
        &server_url,
        "--key",
        "op-key",
    ]);
    assert!(created.status.success(), "{:?}", created);
    let text = stdout(&created);
    assert!(text.contains("tenant_id: cli-co"), "{text}");
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .unwrap()
        .to_owned();

    let refused = run(&[
        "tenant",
        "create",
        "Other",
        "--server",
        &server_url,
        "--key",
        "wrong",
    ]);
    assert!(!refused.status.success());

    let pushed = run(&[
        "plugin",
        "push",
        "--tenant",
        "cli-co",
        "--name",
        "vip-check",
        "--server",
        &server_url,
        "--key",
        &key,
        mcp_example_plugins::VIP_CHECK,
    ]);
    assert!(pushed.status.success(), "{:?}", pushed);
    let listed = run(&[
        "plugin",
        "list",
        "--tenant",
        "cli-co",
        "--server",
        &server_url,
        "--key",
        &key,
    ]);
    assert!(
        stdout(&listed).contains("vip-check@1.0.0\tcondition\tactive"),
        "{}",
        stdout(&listed)
    );

    let published = run(&[
        "flow",
        "publish",
        "--tenant",
        "cli-co",
        "--default",
        "--server",
        &server_url,
        "--key",
        &key,
        &format!("{EXAMPLES}/greeting.json"),
    ]);
    assert!(published.status.success(), "{:?}", published);
    assert!(
        stdout(&published).contains("greeting@1.0.0 published (default)"),
        "{}",
        stdout(&published)
    );

    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let data = std::env::temp_dir().join(format!("mcp-cli-term-{}", std::process::id()));
    let mut server = Command::new(BIN)
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("GRPC_HOST", "127.0.0.1")
        .env("GRPC_PORT", "0")
        .env("HTTP_PORT", "0")
        .env("MCP_DATA_DIR", &data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut first_line,
    )
    .unwrap();
    assert!(first_line.contains("listening"), "{first_line}");
    let sent = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = server.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    let _ = std::fs::remove_dir_all(data);
}

#[test]
fn serve_refuses_bad_settings_by_name() {
    let output = Command::new(BIN)
        .arg("serve")
        .env("GRPC_PORT", "http")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("GRPC_PORT"));
    let output = Command::new(BIN)
        .arg("serve")
        .env("GRPC_PORT", "0")
        .env("CONTEXT_LOCK_TIMEOUT_MS", "soon")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("CONTEXT_LOCK_TIMEOUT_MS"));
}

/// `flow test FLOW SCENARIOS`, which must pass; its report.
fn passing_flow_test(flow: &std::path::Path, scenarios: &std::path::Path) -> String {
    let output = run(&[
        "flow",
        "test",
        flow.to_str().unwrap(),
        scenarios.to_str().unwrap(),
    ]);
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// Writes `scenarios` to `path` and runs `flow test` of the example flow
/// `flow` on it, which must refuse the file; what it said on stderr.
fn refused_scenarios(flow: &str, path: &std::path::Path, scenarios: &str) -> String {
    std::fs::write(path, scenarios).unwrap();
    let output = run(&[
        "flow",
        "test",
        &format!("{EXAMPLES}/{flow}.json"),
        path.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mcp-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo's scenarios, with the demo's plugins as built from plugins/:
/// first words, quick replies, digression and return, correction, cancel,
/// no-match and handoff.
#[test]
fn flow_test_plays_the_demo_scenarios() {
    use mcp_example_plugins as built;
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo");
    let plugins = [
        ("menu-intents", built::KEYWORD_INTENTS),
        ("vip-check", built::VIP_CHECK),
        ("price", built::PRICE),
        ("trivia", built::QUIZ),
        ("order-api", built::ORDER_API),
    ]
    .map(|(name, path)| format!("--plugin={name}={path}"));
    let mut args = vec![
        "flow".to_owned(),
        "test".to_owned(),
        format!("{demo}/pizza_planet.json"),
        format!("{demo}/pizza_planet.scenarios.json"),
    ];
    args.extend(plugins);
    let output = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("✓ turn 4: \"Naples\" → collect_order: Correct! / Back to your order: / How many large pepperoni pizzas? (1 to 10)"),
        "{text}"
    );
    assert!(
        text.ends_with("5 scenarios, 18 turns: 18 passed, 0 failed\n"),
        "{text}"
    );
}

#[test]
fn flow_test_plays_the_example_scenarios() {
    let examples = std::path::Path::new(EXAMPLES);
    let text = passing_flow_test(
        &examples.join("pizza_order.json"),
        &examples.join("pizza_order.scenarios.json"),
    );
    assert!(
        text.contains("scenario \"orders two large pepperoni pizzas\""),
        "{text}"
    );
    assert!(text.contains("✓ turn 3: \"a large pepperoni please\" → collect_order: How many large pepperoni pizzas?"), "{text}");
    assert!(
        text.ends_with("2 scenarios, 8 turns: 8 passed, 0 failed\n"),
        "{text}"
    );
}

#[test]
fn flow_test_reports_each_failed_turn_and_exits_1() {
    let dir = temp_dir("flowtest");
    let scenarios = dir.join("wrong.json");
    std::fs::write(
        &scenarios,
        r#"{ "scenarios": [ { "name": "expects too much", "turns": [
              { "say": "hi", "expect": { "reply": "Hello!", "state": "confirm", "slots": { "size": "small" } } },
              { "say": "large", "expect": { "reply_contains": "Which pizza" } } ] } ] }"#,
    )
    .unwrap();
    let output = run(&[
        "flow",
        "test",
        &format!("{EXAMPLES}/pizza_order.json"),
        scenarios.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("✗ turn 1"), "{text}");
    assert!(
        text.contains(
            "reply: expected \"Hello!\", got \"What size would you like: small, medium or large?\""
        ),
        "{text}"
    );
    assert!(
        text.contains("state: expected \"confirm\", got \"collect_order\""),
        "{text}"
    );
    assert!(
        text.contains("slots.size: expected \"small\", got null"),
        "{text}"
    );
    assert!(text.contains("✓ turn 2"), "{text}");
    assert!(
        text.contains("1 scenarios, 2 turns: 1 passed, 1 failed"),
        "{text}"
    );

    // A malformed file is named with the place that is wrong.
    let error = refused_scenarios(
        "pizza_order",
        &scenarios,
        r#"{ "scenarios": [ { "name": "x", "turns": [ { "expect": {} } ] } ] }"#,
    );
    assert!(
        error.contains("scenarios[0].turns[0]: give either `say` or `after_ms`"),
        "{error}"
    );
    let error = refused_scenarios(
        "pizza_order",
        &scenarios,
        r#"{ "scenarios": [ { "name": "x", "turns": [ { "say": "hi", "expect": { "rply": "typo" } } ] } ] }"#,
    );
    assert!(
        error.contains("scenarios[0].turns[0].expect") && error.contains("rply"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn flow_test_runs_plugins_and_timeouts() {
    let dir = temp_dir("flowexample-plugins");
    let flow = dir.join("flow.json");
    std::fs::write(
        &flow,
        serde_json::json!({
            "flow_id": "vip", "name": "VIP", "version": "1", "initial_state": "hello",
            "states": {
                "hello": {
                    "type": "response",
                    "config": { "response_templates": { "default": "Hi!" } },
                    "transitions": [ { "condition": "any_input", "target_state": "check" } ]
                },
                "check": {
                    "type": "condition",
                    "transitions": [
                        { "condition": "plugin", "plugin": "vip-check", "args": { "min_spent": 500 }, "target_state": "wait", "priority": 1 },
                        { "condition": "default", "target_state": "bye" }
                    ]
                },
                "wait": {
                    "type": "wait",
                    "config": { "prompt": "A VIP! Take your time.", "timeout_ms": 60000 },
                    "transitions": [ { "condition": "timeout", "target_state": "nudge" } ]
                },
                "nudge": { "type": "end", "config": { "message": "Still there?" } },
                "bye": { "type": "end", "config": { "message": "Bye." } }
            }
        })
        .to_string(),
    )
    .unwrap();
    let scenarios = dir.join("scenarios.json");
    std::fs::write(
        &scenarios,
        serde_json::json!({
            "plugins": { "vip-check": mcp_example_plugins::VIP_CHECK },
            "scenarios": [
                { "name": "a big spender waits", "user_profile": { "spent": 900 }, "turns": [
                    { "say": "hello", "expect": { "state": "wait", "reply": "Hi!\nA VIP! Take your time." } },
                    { "after_ms": 59000, "expect": { "state": "wait", "reply": "" } },
                    { "after_ms": 1000, "expect": { "state": "nudge", "reply": "Still there?", "ended": true } }
                ] },
                { "name": "a small spender leaves", "user_profile": { "spent": 10 }, "turns": [
                    { "say": "hello", "expect": { "state": "bye" } }
                ] }
            ]
        })
        .to_string(),
    )
    .unwrap();
    let text = passing_flow_test(&flow, &scenarios);
    assert!(
        text.contains("2 scenarios, 4 turns: 4 passed, 0 failed"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// examples/plugins/javascript: a condition plugin in JavaScript, built by
/// componentize-js (npm), passes its scenarios through the real plugin host.
/// CI installs its npm packages and sets MCP_REQUIRE_JS_PLUGINS=1.
#[test]
fn the_javascript_plugin_example_builds_and_passes_its_scenarios() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins/javascript");
    if !dir
        .join("node_modules/@bytecodealliance/componentize-js")
        .exists()
    {
        assert!(
            std::env::var("MCP_REQUIRE_JS_PLUGINS").as_deref() != Ok("1"),
            "MCP_REQUIRE_JS_PLUGINS=1 but {} has no node_modules (npm install there)",
            dir.display()
        );
        eprintln!(
            "skipped: run `npm install` in {} to build the JavaScript plugin",
            dir.display()
        );
        return;
    }
    let built = Command::new("node")
        .arg("build.mjs")
        .current_dir(&dir)
        .output()
        .expect("node runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let text = passing_flow_test(&dir.join("vip.flow.json"), &dir.join("vip.scenarios.json"));
    assert!(
        text.contains("3 scenarios, 3 turns: 3 passed, 0 failed"),
        "{text}"
    );
}

#[test]
fn flow_test_reports_a_trigger_it_does_not_follow() {
    let dir = temp_dir("flowtest-trigger");
    let scenarios = dir.join("scenarios.json");
    std::fs::write(
        &scenarios,
        r#"{ "scenarios": [ { "name": "hands over to ordering", "turns": [
              { "say": "hello" },
              { "say": "I'd like two pizzas please", "expect": { "trigger_flow": "pizza_order", "ended": true } } ] } ] }"#,
    )
    .unwrap();
    let text = passing_flow_test(
        &std::path::Path::new(EXAMPLES).join("greeting.json"),
        &scenarios,
    );
    assert!(
        text.contains("(triggers flow pizza_order, not followed)"),
        "{text}"
    );

    let error = refused_scenarios(
        "greeting",
        &scenarios,
        r#"{ "scenarios": [ { "name": "x", "turns": [ { "after_ms": 5, "data": { "channel": "web" } } ] } ] }"#,
    );
    assert!(
        error.contains("scenarios[0].turns[0]: `data` goes with a message"),
        "{error}"
    );
    let error = refused_scenarios("greeting", &scenarios, r#"{ "scenarios": [] }"#);
    assert!(error.contains("scenarios: there are none"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}
