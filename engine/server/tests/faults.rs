//! Dependencies that stop and come back, each a throwaway instance of its
//! own on a free port (never the shared services other tests use), and an
//! engine process killed mid-turn.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use mcp_testkit::{ThrowawayPostgres, ThrowawayRedis};
use serde_json::json;
use tonic::Code;

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

/// Asks for a name, then a city, then thanks.
fn form_flow() -> serde_json::Value {
    json!({
        "flow_id": "form", "name": "Form", "version": "1", "initial_state": "greet",
        "states": {
            "greet": {
                "type": "response",
                "config": { "response_templates": { "default": "Hello!" } },
                "transitions": [ { "condition": "any_input", "target_state": "ask" } ]
            },
            "ask": {
                "type": "slot_filling",
                "config": {
                    "required_slots": ["name", "city"],
                    "prompts": { "name": "Your name?", "city": "Your city?" }
                },
                "transitions": [ { "condition": "slot_filled", "target_state": "done" } ]
            },
            "done": {
                "type": "end",
                "config": { "message": "Thanks {{ slots.name }} from {{ slots.city }}." }
            }
        }
    })
}

#[tokio::test]
async fn a_conversation_continues_from_its_filled_slots_after_redis_forgets_it() {
    let mut redis = ThrowawayRedis::start();
    // sync: the reply waits for the durable copy, so the restart below
    // cannot overtake it.
    let engine = start(HashMap::from([
        ("REDIS_URL", redis.url()),
        ("CONTEXT_DURABILITY", "sync".to_owned()),
    ]))
    .await;
    let (mut admin, mut client) = clients(&engine).await;
    let (tenant, key) = new_tenant(&mut admin, "forgotten", &[]).await;
    publish(&mut admin, &key, &tenant, &form_flow()).await;
    let mut say = async |text: &str| {
        client
            .process_message(authed(message(&tenant, "form-1", text), &key))
            .await
            .unwrap()
            .into_inner()
    };
    say("hi").await;
    let asked = say("Ada").await;
    assert_eq!(asked.current_state, "ask");

    // This Redis keeps nothing: the restart forgets the conversation.
    redis.restart();
    let done = say("Paris").await;
    assert_eq!(done.current_state, "done", "{done:?}");
    let text = done.response.unwrap().text;
    assert!(text.contains("Thanks Ada from Paris."), "{text}");
}

#[tokio::test]
async fn live_conversations_turn_while_postgresql_is_down_and_no_transcript_is_lost() {
    let Ok(redis) = std::env::var("REDIS_URL") else {
        return;
    };
    let postgres = ThrowawayPostgres::start();
    let engine = start(HashMap::from([
        ("DATABASE_URL", postgres.url()),
        ("REDIS_URL", redis),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "2000".to_owned()),
    ]))
    .await;
    let (mut admin, mut client) = clients(&engine).await;
    let (tenant, key) = new_tenant(&mut admin, "pgdown", &[]).await;
    publish(&mut admin, &key, &tenant, &greeting_flow()).await;
    let conversations = ["c-0", "c-1", "c-2", "c-3"];
    let turn = |conversation: &str| {
        let mut request = authed(message(&tenant, conversation, "hi"), &key);
        request.set_timeout(Duration::from_secs(10));
        request
    };
    for conversation in conversations {
        client.process_message(turn(conversation)).await.unwrap();
    }

    postgres.stop();
    let noticed = eventually(Duration::from_secs(30), async || {
        http_get(&engine.http, "/healthz")
            .await
            .1
            .starts_with("degraded")
    })
    .await;
    assert!(noticed, "health never said degraded");
    let (code, health) = http_get(&engine.http, "/healthz").await;
    assert_eq!(code, 200, "still serving turns: {health}");
    assert!(health.contains("database"), "{health}");

    // Live conversations turn from memory: twenty turns.
    for round in 0..5 {
        for conversation in conversations {
            let reply = client.process_message(turn(conversation)).await;
            let reply = reply.unwrap_or_else(|e| panic!("round {round}, {conversation}: {e:?}"));
            assert_eq!(reply.into_inner().current_state, "chat");
        }
    }
    // What needs the database is refused at once, not after a wait: a new
    // conversation (is there a durable copy?) and an admin call.
    let refused = client.process_message(turn("new")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let mut reading = authed(
        mcp_engine::proto::admin::GetTranscriptRequest {
            tenant_id: tenant.clone(),
            conversation_id: "c-0".into(),
            ..Default::default()
        },
        &key,
    );
    reading.set_timeout(Duration::from_secs(10));
    let refused = admin.get_transcript(reading).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Back: the queued turns land, in full and once each.
    postgres.restart();
    let transcripts = async || -> Vec<(String, i64)> {
        use sqlx::Connection;
        let Ok(mut db) = sqlx::PgConnection::connect(&postgres.url()).await else {
            return Vec::new();
        };
        sqlx::query_as(
            "SELECT conversation_id, turn FROM transcripts WHERE tenant_id = $1 \
             ORDER BY conversation_id, turn",
        )
        .bind(&tenant)
        .fetch_all(&mut db)
        .await
        .unwrap_or_default()
    };
    let landed = eventually(Duration::from_secs(60), async || {
        transcripts().await.len() >= 24
    })
    .await;
    let rows = transcripts().await;
    assert!(landed, "{} of 24 turns in the transcripts", rows.len());
    let expected: Vec<(String, i64)> = conversations
        .iter()
        .flat_map(|c| (1..=6).map(move |turn| (c.to_string(), turn)))
        .collect();
    assert_eq!(rows, expected, "every turn once, none lost");
    let healthy = eventually(Duration::from_secs(30), async || {
        http_get(&engine.http, "/healthz").await == (200, "ok\n".to_owned())
    })
    .await;
    assert!(healthy, "health never recovered");
}

#[tokio::test]
async fn another_process_serves_a_conversation_whose_holder_was_killed() {
    let (Ok(database), Ok(redis)) = (std::env::var("DATABASE_URL"), std::env::var("REDIS_URL"))
    else {
        return;
    };
    let env = HashMap::from([
        (
            "DATABASE_URL",
            postgres_schema_url(&database, "mcp_test_faults").await,
        ),
        ("REDIS_URL", redis),
    ]);
    let mut holder = start(env.clone()).await;
    let mut api = slow_api().await;
    let (tenant, key) = tenant_on_slow_api(&holder, &api).await;

    // The holder takes the conversation and waits on the API...
    let (_, mut holder_client) = clients(&holder).await;
    let (tenant_a, key_a) = (tenant.clone(), key.clone());
    let in_flight = tokio::spawn(async move {
        holder_client
            .process_message(authed(
                message(&tenant_a, "held", "where is my order?"),
                &key_a,
            ))
            .await
    });
    api.arrived.recv().await.unwrap();
    // ...and dies with it locked.
    holder.child.start_kill().unwrap();
    holder.child.wait().await.unwrap();
    assert!(
        in_flight.await.unwrap().is_err(),
        "the killed turn cannot answer"
    );

    // The second process waits at most the lock timeout (5 s by default):
    // it gets the conversation only because the dead holder's lease (3 s
    // by default) ran out.
    let successor = start(env).await;
    let (_, mut client) = clients(&successor).await;
    for _ in 0..2 {
        // One for the dead holder's connection, one for ours.
        api.release.send(()).await.unwrap();
    }
    let mut request = authed(message(&tenant, "held", "where is my order?"), &key);
    request.set_timeout(Duration::from_secs(20));
    let served = client.process_message(request).await;
    let served = served.unwrap_or_else(|e| panic!("the conversation stayed locked: {e:?}"));
    let served = served.into_inner();
    assert_eq!(served.current_state, "status", "{served:?}");
}
