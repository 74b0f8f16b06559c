//! `mcp-engine plugin new` and `plugin build`: a plugin project for one world
//! in Rust or Python that builds as generated and passes its own tests, and
//! one command that builds it into a component.
//!
//! A project holds the plugin contract (`wit/`, as this engine speaks it),
//! the plugin's source with tests, a README, and `mcp-plugin.json` (name,
//! world, language), which `plugin build` reads.

use std::path::{Path, PathBuf};
use std::process::Command;

use mcp_flow::PluginWorld;
use serde::{Deserialize, Serialize};

mod wit {
    include!(concat!(env!("OUT_DIR"), "/wit_files.rs"));
}

/// The languages a plugin can be scaffolded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    Python,
}

/// `mcp-plugin.json`: what `plugin build` needs to know.
#[derive(Debug, Serialize, Deserialize)]
pub struct Project {
    pub name: String,
    pub world: PluginWorld,
    pub language: Language,
}

const PROJECT_FILE: &str = "mcp-plugin.json";

/// A template per world: (world, Rust source, Python source, Python test).
const TEMPLATES: [(PluginWorld, &str, &str, &str); 5] = [
    (
        PluginWorld::Condition,
        include_str!("../templates/rust/condition.rs"),
        include_str!("../templates/python/condition.py"),
        include_str!("../templates/python/test_condition.py"),
    ),
    (
        PluginWorld::Action,
        include_str!("../templates/rust/action.rs"),
        include_str!("../templates/python/action.py"),
        include_str!("../templates/python/test_action.py"),
    ),
    (
        PluginWorld::Tool,
        include_str!("../templates/rust/tool.rs"),
        include_str!("../templates/python/tool.py"),
        include_str!("../templates/python/test_tool.py"),
    ),
    (
        PluginWorld::StateType,
        include_str!("../templates/rust/state-type.rs"),
        include_str!("../templates/python/state-type.py"),
        include_str!("../templates/python/test_state-type.py"),
    ),
    (
        PluginWorld::Intent,
        include_str!("../templates/rust/intent.rs"),
        include_str!("../templates/python/intent.py"),
        include_str!("../templates/python/test_intent.py"),
    ),
];
const CARGO_TOML: &str = include_str!("../templates/rust/Cargo.toml");
const RUST_CONVERSATION: &str = include_str!("../templates/rust/conversation.rs");
const PYTHON_CONVERSATION: &str = include_str!("../templates/python/conversation.py");

/// Writes a new plugin project into `dir` (which must not exist, or be
/// empty). Returns the files written, relative to `dir`.
pub fn new_plugin(
    dir: &Path,
    name: &str,
    world: PluginWorld,
    language: Language,
) -> Result<Vec<PathBuf>, String> {
    if !mcp_flow::flow::is_plugin_name(name) {
        return Err(format!(
            "\"{name}\" is not a plugin name: lowercase letters, digits and '-', starting with a letter"
        ));
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .next()
            .is_some()
    {
        return Err(format!("{} exists and is not empty", dir.display()));
    }
    let (_, rust, python, python_test) = TEMPLATES
        .iter()
        .find(|(w, ..)| *w == world)
        .expect("a template for every world");
    let fill = |template: &str| {
        template
            .replace("__NAME__", name)
            .replace("__WORLD__", world.as_str())
    };

    let mut files: Vec<(PathBuf, String)> = wit::WIT_FILES
        .iter()
        .map(|(path, text)| (Path::new("wit").join(path), (*text).to_owned()))
        .collect();
    let project = Project {
        name: name.to_owned(),
        world,
        language,
    };
    files.push((
        PROJECT_FILE.into(),
        serde_json::to_string_pretty(&project).expect("serializable") + "\n",
    ));
    files.push(("README.md".into(), readme(name, world, language)));
    match language {
        Language::Rust => {
            files.push(("Cargo.toml".into(), fill(CARGO_TOML)));
            files.push((
                "src/lib.rs".into(),
                fill(rust).replace("__CONVERSATION__\n", RUST_CONVERSATION),
            ));
            files.push((".gitignore".into(), "/target\n*.wasm\n".into()));
        }
        Language::Python => {
            files.push(("app.py".into(), fill(python)));
            files.push((
                "test_app.py".into(),
                fill(python_test).replace("__CONVERSATION__\n", PYTHON_CONVERSATION),
            ));
            files.push((
                ".gitignore".into(),
                "/wit_world\n/componentize_py_*\n__pycache__/\n*.wasm\n".into(),
            ));
        }
    }
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

/// Generates the Python bindings a Python project's tests import
/// (`wit_world`), with componentize-py.
pub fn python_bindings(dir: &Path, world: PluginWorld) -> Result<(), String> {
    run(Command::new("componentize-py").current_dir(dir).args([
        "-d",
        "wit",
        "-w",
        world.as_str(),
        "bindings",
        ".",
    ]))
}

/// Builds the project in `dir` into a component; returns its path.
pub fn build_plugin(dir: &Path) -> Result<PathBuf, String> {
    let manifest = dir.join(PROJECT_FILE);
    let text = std::fs::read_to_string(&manifest).map_err(|e| {
        format!(
            "{}: {e} (is this a plugin project made by `mcp-engine plugin new`?)",
            manifest.display()
        )
    })?;
    let project: Project =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    match project.language {
        Language::Rust => build_rust(dir),
        Language::Python => {
            let dir = dir
                .canonicalize()
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            let output = dir.join(format!("{}.wasm", project.name.replace('-', "_")));
            run(Command::new("componentize-py")
                .current_dir(&dir)
                .args([
                    "-d",
                    "wit",
                    "-w",
                    project.world.as_str(),
                    "componentize",
                    "app",
                    "-o",
                ])
                .arg(&output)
                .env("PYTHONDONTWRITEBYTECODE", "1"))?;
            Ok(output)
        }
    }
}

/// `cargo build --release --target wasm32-wasip2`, reading the component's
/// path from cargo's own report of what it built.
fn build_rust(dir: &Path) -> Result<PathBuf, String> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(
            "cargo build failed (is the target installed? rustup target add wasm32-wasip2)".into(),
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .find(|file| file.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| "cargo built no .wasm file".to_owned())
}

fn run(command: &mut Command) -> Result<(), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let status = command.status().map_err(|e| {
        format!("running {program}: {e} (pip install componentize-py for Python plugins)")
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} failed ({status})"))
    }
}

fn readme(name: &str, world: PluginWorld, language: Language) -> String {
    let (test, build_tool) = match language {
        Language::Rust => (
            "cargo test",
            "Rust with the wasm32-wasip2 target (`rustup target add wasm32-wasip2`)",
        ),
        Language::Python => (
            "componentize-py -d wit -w WORLD bindings .   # once: the bindings the tests import\npython3 -m unittest test_app",
            "componentize-py (`pip install componentize-py`)",
        ),
    };
    let test = test.replace("WORLD", world.as_str());
    format!(
        "# {name}

A `{world}` plugin for MCP Engine, made by `mcp-engine plugin new`. Building it
needs {build_tool}.

```sh
{test}
mcp-engine plugin build                 # prints the component's path
mcp-engine plugin push --tenant TENANT --name {name} PATH.wasm
```

`wit/` is the plugin contract (package `mcp:plugin@0.1.0`); its guide is
wit/README.md in the MCP Engine repository. Every call gets a fresh instance
under the tenant's limits (fuel, time, memory); a plugin that fails or
overruns is an error the flow routes, never a crash of the engine.
"
    )
}
