//! A plugin that misbehaves on request, so the tests can show each of the
//! host's limits stopping it. `args.mode` picks the misbehaviour.

wit_bindgen::generate!({ path: "../../wit", world: "tool", generate_all });

use std::hint::black_box;

use exports::mcp::plugin::tools::Guest;
use mcp::plugin::types::{Conversation, Error, ToolManifest};
use serde_json::Value;
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};

struct Hostile;

impl Guest for Hostile {
    fn describe() -> ToolManifest {
        ToolManifest {
            name: "hostile".into(),
            description: "Misbehaves on request.".into(),
            input_schema: r#"{"type":"object"}"#.into(),
            output_schema: r#"{}"#.into(),
            permissions: vec![],
            rate_limit: None,
        }
    }

    fn call(args: String, _conversation: Conversation) -> Result<String, Error> {
        let args: Value = serde_json::from_str(&args).unwrap_or(Value::Null);
        match args["mode"].as_str().unwrap_or("") {
            "ok" => Ok(r#"{"fine":true}"#.into()),
            // What it was given, to show what callers pass.
            "echo" => Ok(args.to_string()),
            "loop" => {
                let mut i = 0u64;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recursion" => Ok(recurse(black_box(1)).to_string()),
            "trap" => panic!("the plugin gave up"),
            "log-flood" => {
                for i in 0..10_000 {
                    println!("flooding the log, line {i}");
                    mcp::plugin::host::log(mcp::plugin::host::Level::Info, "and through host.log");
                }
                Ok(r#"{"flooded":true}"#.into())
            }
            // Blocked in wasi:io/poll, where epochs cannot interrupt: only
            // the host's timer stops it.
            "park" => {
                wasi::clocks::monotonic_clock::subscribe_duration(60_000_000_000).block();
                Ok(r#"{"woke":true}"#.into())
            }
            "huge" => Ok(format!("\"{}\"", "x".repeat(8 << 20))),
            "file" => std::fs::read_to_string("/etc/passwd")
                .map(|text| serde_json::to_string(&text).unwrap())
                .map_err(|e| Error {
                    code: "io".into(),
                    message: e.to_string(),
                }),
            "http" => {
                let authority = args["authority"].as_str().unwrap_or("example.com:80");
                let request = OutgoingRequest::new(Fields::new());
                request.set_method(&Method::Get).unwrap();
                request.set_scheme(Some(&Scheme::Http)).unwrap();
                request.set_authority(Some(authority)).unwrap();
                request.set_path_with_query(Some("/")).unwrap();
                let pending = outgoing_handler::handle(request, None).map_err(|e| Error {
                    code: "http".into(),
                    message: format!("{e:?}"),
                })?;
                pending.subscribe().block();
                match pending.get() {
                    Some(Ok(Ok(response))) => Ok(response.status().to_string()),
                    Some(Ok(Err(e))) => Err(Error {
                        code: "http".into(),
                        message: format!("{e:?}"),
                    }),
                    _ => Err(Error {
                        code: "http".into(),
                        message: "no response".into(),
                    }),
                }
            }
            other => Err(Error {
                code: "bad-args".into(),
                message: format!("unknown mode {other:?}"),
            }),
        }
    }
}

/// Recursion that lives on the wasm stack only (no arrays, so nothing goes
/// to the shadow stack in linear memory): the host's stack limit stops it.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    // black_box keeps this from becoming a loop.
    black_box(recurse(depth + 1)).wrapping_add(depth)
}

export!(Hostile);
