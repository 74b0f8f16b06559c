//! Dependencies that stop and come back, each a throwaway instance of its
//! own on a free port (never the shared services other tests use).

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tonic::Code;

/// A `redis-server` of this test's, keeping nothing on disk; stopped when
/// dropped.
struct ThrowawayRedis {
    port: u16,
    dir: PathBuf,
    process: Option<Child>,
}

impl ThrowawayRedis {
    fn start() -> ThrowawayRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("mcp-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = ThrowawayRedis {
            port,
            dir,
            process: None,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts it (again) on the same port, and waits until it answers.
    fn restart(&mut self) {
        self.stop();
        let process = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.process = Some(process);
        let give_up = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < give_up, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn greeting_flow() -> serde_json::Value {
    json!({
        "flow_id": "hello", "name": "Hello", "version": "1", "initial_state": "greet",
        "states": {
            "greet": {
                "type": "response",
                "config": { "response_templates": { "default": "Hello!" } },
                "transitions": [ { "condition": "any_input", "target_state": "chat" } ]
            },
            "chat": {
                "type": "response",
                "config": { "response_templates": { "default": "Go on." } },
                "transitions": [ { "condition": "any_input", "target_state": "chat" } ]
            }
        }
    })
}

#[tokio::test]
async fn turns_fail_fast_while_redis_is_down_and_the_first_after_it_returns_succeeds() {
    let mut redis = ThrowawayRedis::start();
    let engine = start(HashMap::from([("REDIS_URL", redis.url())])).await;
    let (mut admin, mut client) = clients(&engine).await;
    let (tenant, key) = new_tenant(&mut admin, "outage", &[]).await;
    publish(&mut admin, &key, &tenant, &greeting_flow()).await;
    // A deadline a hang would run into, so "fast" needs no clock here.
    let turn = |conversation: &str| {
        let mut request = authed(message(&tenant, conversation, "hi"), &key);
        request.set_timeout(Duration::from_secs(10));
        request
    };
    client.process_message(turn("before")).await.unwrap();

    // Down: UNAVAILABLE, well inside a deadline a hang would run into.
    redis.stop();
    let refused = client.process_message(turn("during")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Back (empty, as this Redis keeps nothing): the very next turn works.
    redis.restart();
    let answered = client
        .process_message(turn("after"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.current_state, "chat");

    // Restarted between two turns of one conversation, with no turn in
    // between to notice: the next turn is answered too.
    redis.restart();
    let answered = client
        .process_message(turn("after"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        answered.status.is_some_and(|s| s.success),
        "the turn after a restart succeeds"
    );
}
