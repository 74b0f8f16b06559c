//! The real `mcp-engine` binary, over gRPC only: a tenant, its plugins and
//! flow, whole conversations, and the error codes of bad calls. Runs on the
//! embedded defaults, and on PostgreSQL + Redis when DATABASE_URL and
//! REDIS_URL are set.

use std::collections::HashMap;

use mcp_engine::proto::admin::admin_client::AdminClient;
use mcp_engine::proto::admin::*;
use mcp_engine::proto::engine::mcp_engine_client::McpEngineClient;
use mcp_engine::proto::engine::*;
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Request};

mod common;

use common::*;

async fn whole_story(engine: &Engine) {
    // Ids of this run only: Redis outlives test runs.
    let acme = format!("acme-{}", std::process::id());
    let globex = format!("globex-{}", std::process::id());
    let channel = Channel::from_shared(engine.address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel.clone()).max_encoding_message_size(64 << 20);
    let mut client = McpEngineClient::new(channel);

    // Only the operator creates tenants.
    let refused = admin
        .create_tenant(authed(
            CreateTenantRequest {
                name: "Acme".into(),
                ..Default::default()
            },
            "wrong",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let created = admin
        .create_tenant(authed(
            CreateTenantRequest {
                tenant_id: acme.clone(),
                name: "Acme".into(),
                ..Default::default()
            },
            OPERATOR_KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    let key = created.api_key.unwrap().token;
    let other = admin
        .create_tenant(authed(
            CreateTenantRequest {
                tenant_id: globex.clone(),
                name: "Globex".into(),
                ..Default::default()
            },
            OPERATOR_KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    let other_key = other.api_key.unwrap().token;

    // Plugins, then a flow that uses them.
    for (name, path) in [
        ("vip-check", mcp_example_plugins::VIP_CHECK),
        ("price", mcp_example_plugins::PRICE),
    ] {
        admin
            .upload_plugin(authed(
                UploadPluginRequest {
                    tenant_id: acme.clone(),
                    name: name.into(),
                    version: "1.0.0".into(),
                    component: std::fs::read(path).unwrap(),
                    ..Default::default()
                },
                &key,
            ))
            .await
            .unwrap();
    }
    let junk = admin
        .upload_plugin(authed(
            UploadPluginRequest {
                tenant_id: acme.clone(),
                name: "junk".into(),
                version: "1".into(),
                component: b"nope".to_vec(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(junk.code(), Code::InvalidArgument, "{junk:?}");
    let bad_flow = admin
        .publish_flow(authed(
            PublishFlowRequest {
                tenant_id: acme.clone(),
                definition: "{}".into(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_flow.code(), Code::InvalidArgument);
    let published = admin
        .publish_flow(authed(
            PublishFlowRequest {
                tenant_id: acme.clone(),
                definition: refunds_flow(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(published.is_default);

    // A conversation: the first message is the first waiting state's
    // (`ask`), which hands over to the plugin condition and an end state.
    let first = client
        .process_message(authed(message(&acme, "c-1", "I spent 600"), &key))
        .await
        .unwrap()
        .into_inner();
    assert!(first.status.as_ref().unwrap().success, "{:?}", first.status);
    assert!(
        ["vip", "done"].contains(&first.current_state.as_str()),
        "{first:?}"
    );
    let reply = first.response.as_ref().unwrap().text.clone();
    assert!(
        reply.ends_with("VIP.") || reply.ends_with("Done."),
        "{reply}"
    );
    // An ended conversation starts over with the next message.
    let second = client
        .process_message(authed(message(&acme, "c-1", "again"), &key))
        .await
        .unwrap()
        .into_inner();
    assert!(
        second.status.as_ref().unwrap().success,
        "{:?}",
        second.status
    );
    let state = client
        .get_conversation_state(authed(
            GetConversationStateRequest {
                tenant_context: tenant(&acme),
                conversation_id: "c-1".into(),
                metadata: None,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .conversation_state
        .unwrap();
    assert_eq!(
        (
            state.flow_id.as_str(),
            state.flow_version.as_str(),
            state.message_count
        ),
        ("refunds", "1", 2)
    );

    // The transcript has both turns.
    let transcript = admin
        .get_transcript(authed(
            GetTranscriptRequest {
                tenant_id: acme.clone(),
                conversation_id: "c-1".into(),
                limit: 0,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(transcript.turns.len(), 2);

    // Batch, in order, in parallel.
    let batch = client
        .batch_process_messages(authed(
            BatchProcessMessagesRequest {
                tenant_context: tenant(&acme),
                messages: (0..4)
                    .map(|i| message(&acme, &format!("b-{i}"), "hi"))
                    .collect(),
                parallel_processing: true,
                max_concurrency: 4,
                metadata: None,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.successful_count, 4);
    assert_eq!(
        batch
            .responses
            .iter()
            .map(|r| r.conversation_id.clone())
            .collect::<Vec<_>>(),
        ["b-0", "b-1", "b-2", "b-3"]
    );

    // Errors: no key, unknown key, another tenant's key, bad input, unknown conversation.
    let code =
        |r: Result<tonic::Response<ProcessMessageResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        code(
            client
                .process_message(Request::new(message(&acme, "c-1", "x")))
                .await
        ),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            client
                .process_message(authed(message(&acme, "c-1", "x"), "mcpk_00_11"))
                .await
        ),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            client
                .process_message(authed(message(&acme, "c-1", "x"), &other_key))
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            client
                .process_message(authed(message(&acme, "", "x"), &key))
                .await
        ),
        Code::InvalidArgument
    );
    let mut bad_channel = message(&acme, "c-9", "x");
    bad_channel.channel = 99;
    assert_eq!(
        code(client.process_message(authed(bad_channel, &key)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            client
                .process_message(authed(message(&globex, "c-1", "x"), &other_key))
                .await
        ),
        Code::NotFound,
        "globex has no flow"
    );
    let missing = client
        .get_conversation_state(authed(
            GetConversationStateRequest {
                tenant_context: tenant(&acme),
                conversation_id: "nope".into(),
                metadata: None,
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // Scopes: a messages-only key cannot change plugins or flows, nor mint keys.
    let messages_only = admin
        .create_api_key(authed(
            CreateApiKeyRequest {
                tenant_id: acme.clone(),
                name: "bot".into(),
                scopes: vec!["messages".into()],
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap()
        .token;
    let denied = admin
        .publish_flow(authed(
            PublishFlowRequest {
                tenant_id: acme.clone(),
                definition: refunds_flow(),
                ..Default::default()
            },
            &messages_only,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = admin
        .list_plugins(authed(
            ListPluginsRequest {
                tenant_id: acme.clone(),
            },
            &messages_only,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = admin
        .create_api_key(authed(
            CreateApiKeyRequest {
                tenant_id: acme.clone(),
                name: "x".into(),
                scopes: vec!["admin".into()],
            },
            &messages_only,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let bad_scope = admin
        .create_api_key(authed(
            CreateApiKeyRequest {
                tenant_id: acme.clone(),
                name: "x".into(),
                scopes: vec!["root".into()],
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_scope.code(), Code::InvalidArgument);
    assert!(bad_scope.message().contains("scopes"), "{bad_scope:?}");
    let duplicate = admin
        .publish_flow(authed(
            PublishFlowRequest {
                tenant_id: acme.clone(),
                definition: refunds_flow(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let reset_empty = client
        .reset_conversation(authed(
            ResetConversationRequest {
                tenant_context: tenant(&acme),
                conversation_id: "".into(),
                reason: "".into(),
                metadata: None,
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(reset_empty.code(), Code::InvalidArgument);
    let too_big = client
        .batch_process_messages(authed(
            BatchProcessMessagesRequest {
                tenant_context: tenant(&acme),
                messages: (0..101)
                    .map(|i| message(&acme, &format!("x-{i}"), "hi"))
                    .collect(),
                parallel_processing: false,
                max_concurrency: 0,
                metadata: None,
            },
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument);
    assert!(too_big.message().contains("messages"), "{too_big:?}");

    // Reset: the conversation is gone and starts over.
    let reset = client
        .reset_conversation(authed(
            ResetConversationRequest {
                tenant_context: tenant(&acme),
                conversation_id: "c-1".into(),
                reason: "test".into(),
                metadata: None,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.previous_state, second.current_state);
    let again = client
        .process_message(authed(message(&acme, "c-1", "hello"), &key))
        .await
        .unwrap()
        .into_inner();
    let after = client
        .get_conversation_state(authed(
            GetConversationStateRequest {
                tenant_context: tenant(&acme),
                conversation_id: "c-1".into(),
                metadata: None,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .conversation_state
        .unwrap();
    assert!(again.status.unwrap().success);
    assert_eq!(
        after.message_count, 1,
        "a reset conversation starts from scratch"
    );

    // An experiment takes every new conversation into its one variant.
    let config = json!({
        "experiment_id": "exp-1", "name": "all in", "start_date": "2026-01-01T00:00:00Z",
        "variants": [ { "name": "treatment", "percentage": 100.0,
                        "modifications": { "flow_id": "refunds", "flow_version": "1" } } ]
    });
    admin
        .create_experiment(authed(
            CreateExperimentRequest {
                tenant_id: acme.clone(),
                config: config.to_string(),
            },
            &key,
        ))
        .await
        .unwrap();
    let in_experiment = client
        .process_message(authed(message(&acme, "exp-conv", "hi"), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(in_experiment.ab_variant, "treatment");
    assert_eq!(
        again.ab_variant, "",
        "conversations started before the experiment are not in it"
    );

    // Streaming: init, a message (each of its messages as a `message`
    // event, its response, then its state change), a heartbeat, a close; a
    // failing message is a recoverable stream error.
    use conversation_stream_request::RequestType;
    use conversation_stream_response::ResponseType;
    let requests = vec![
        RequestType::Init(StreamInit {
            tenant_context: tenant(&acme),
            conversation_id: "streamed".into(),
            event_types: vec![],
            metadata: None,
        }),
        RequestType::Message(message(&acme, "streamed", "hello")),
        RequestType::Message(message(&acme, "streamed", &"x".repeat(70_000))),
        RequestType::Heartbeat(StreamHeartbeat { timestamp: None }),
        RequestType::Close(StreamClose {
            reason: "done".into(),
            metadata: None,
        }),
    ]
    .into_iter()
    .map(|r| ConversationStreamRequest {
        request_type: Some(r),
    });
    let mut replies = client
        .stream_conversation(authed(futures::stream::iter(requests), &key))
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    let mut said = Vec::new();
    let mut answered = String::new();
    while let Some(reply) = replies.message().await.unwrap() {
        kinds.push(match reply.response_type.unwrap() {
            ResponseType::Ack(ack) => format!("ack:{}", ack.status.unwrap().message),
            ResponseType::MessageResponse(r) => {
                answered = r.response.unwrap().text;
                format!("message:{}", r.current_state)
            }
            ResponseType::Event(e) if e.event_type == "message" => {
                assert!(
                    answered.is_empty(),
                    "message events come before their response"
                );
                let data = e.event_data.unwrap();
                match &data.fields["text"].kind {
                    Some(prost_types::value::Kind::StringValue(text)) => said.push(text.clone()),
                    other => panic!("message event without text: {other:?}"),
                }
                continue;
            }
            ResponseType::Event(e) => format!("event:{}", e.event_type),
            ResponseType::Error(e) => format!("error:{}", e.error_code),
        });
    }
    // The messages one by one, then the response that joins them.
    assert!(!said.is_empty());
    assert_eq!(said.join("\n"), answered);
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    assert_eq!(kinds[0], "ack:ready");
    assert!(kinds[1].starts_with("message:"), "{kinds:?}");
    assert_eq!(kinds[2], "event:state_changed");
    assert_eq!(kinds[3], "error:InvalidArgument");
    assert_eq!(kinds[4..], ["ack:heartbeat", "ack:closed"]);

    // Health: the seed's service, and the standard one generic tools use.
    let channel = Channel::from_shared(engine.address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health_v2 =
        mcp_engine::proto::health::health_client::HealthClient::new(channel.clone());
    let check = |service: &str| mcp_engine::proto::health::HealthCheckRequest {
        service: service.into(),
        metadata: None,
    };
    let serving = health_v2.check(check("")).await.unwrap().into_inner();
    assert_eq!(
        serving.status,
        mcp_engine::proto::common::HealthStatus::HealthServing as i32
    );
    let unknown = health_v2
        .check(check("no.such.Service"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        unknown.status,
        mcp_engine::proto::common::HealthStatus::HealthServiceUnknown as i32
    );
    // Dependencies are for the operator (hostile.rs: refused to others).
    let detailed = health_v2
        .get_detailed_health(authed(
            mcp_engine::proto::health::DetailedHealthRequest {
                include_dependencies: true,
                ..Default::default()
            },
            OPERATOR_KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    let dependencies: Vec<_> = detailed
        .dependencies
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(dependencies, ["database", "context_store"]);
    assert!(
        detailed
            .dependencies
            .iter()
            .all(|d| d.error_message.is_empty()),
        "{detailed:?}"
    );
    let mut standard = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = standard
        .check(tonic_health::pb::HealthCheckRequest {
            service: "mcp.engine.v2.MCPEngine".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Every turn was published as an analytics event; on Redis, to the stream.
    if let Some(mut redis) = engine.redis().await {
        // They are sent behind the reply: give the sender a moment.
        let mut ours = 0;
        for _ in 0..100 {
            let mut range = redis::cmd("XREVRANGE");
            range
                .arg(mcp_store::analytics::STREAM)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(500);
            let entries: Vec<(String, Vec<(String, String)>)> = redis.query(&range).await;
            ours = entries
                .iter()
                .filter(|(_, fields)| fields.iter().any(|(k, v)| k == "tenant" && *v == acme))
                .count();
            if ours >= 8 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(ours >= 8, "{ours} analytics events for {acme}");
    }

    // Metrics: over HTTP for Prometheus, and over gRPC for the tenant.
    let (code, text) = http_get(&engine.http, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        text.contains(&format!(
            "mcp_turns_total{{outcome=\"ok\",tenant=\"{acme}\"}}"
        )),
        "{text}"
    );
    assert!(
        text.contains("# TYPE mcp_turn_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        http_get(&engine.http, "/healthz").await,
        (200, "ok\n".to_owned())
    );
    let metrics = client
        .get_metrics(authed(
            GetMetricsRequest {
                tenant_context: tenant(&acme),
                metric_names: vec!["mcp_turns_total".into()],
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .metrics;
    let turns: f64 = metrics
        .iter()
        .flat_map(|m| &m.points)
        .map(|p| p.value)
        .sum();
    assert!(turns >= 8.0, "{metrics:?}");
    assert!(metrics.iter().all(|m| m.name == "mcp_turns_total"));
    let others = client
        .get_metrics(authed(
            GetMetricsRequest {
                tenant_context: tenant(&globex),
                ..Default::default()
            },
            &other_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .metrics;
    assert!(
        others
            .iter()
            .all(|m| m.labels.as_ref().unwrap().fields["tenant"]
                == prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(globex.clone()))
                }),
        "another tenant's figures leaked"
    );

    let health = client
        .health_check(Request::new(()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.service_name, "mcp-engine");
}

#[tokio::test]
async fn a_tenant_runs_conversations_on_the_embedded_defaults() {
    let engine = start(HashMap::new()).await;
    whole_story(&engine).await;
}

#[tokio::test]
async fn a_tenant_runs_conversations_on_postgres_and_redis() {
    let (Ok(database), Ok(redis)) = (std::env::var("DATABASE_URL"), std::env::var("REDIS_URL"))
    else {
        return;
    };
    let env = HashMap::from([
        ("DATABASE_URL", postgres_url(&database).await),
        ("REDIS_URL", redis),
    ]);
    let engine = start(env).await;
    whole_story(&engine).await;
}

/// Two engine processes on one PostgreSQL and Redis serve one conversation
/// alternately: every turn sees the one before, whichever process ran it.
#[tokio::test]
async fn a_tenant_runs_conversations_on_postgres_and_a_redis_cluster() {
    let Ok(database) = std::env::var("DATABASE_URL") else {
        return;
    };
    let cluster = mcp_testkit::ThrowawayRedisCluster::start();
    let env = HashMap::from([
        (
            "DATABASE_URL",
            postgres_schema_url(&database, "mcp_test_e2e_cluster").await,
        ),
        ("REDIS_URL", cluster.url()),
        ("REDIS_CLUSTER", "true".to_owned()),
    ]);
    let engine = start(env).await;
    whole_story(&engine).await;
}

#[tokio::test]
async fn two_processes_share_conversations() {
    let (Ok(database), Ok(redis)) = (std::env::var("DATABASE_URL"), std::env::var("REDIS_URL"))
    else {
        return;
    };
    let database = postgres_schema_url(&database, "mcp_test_e2e_pair").await;
    let env = || {
        HashMap::from([
            ("DATABASE_URL", database.clone()),
            ("REDIS_URL", redis.clone()),
        ])
    };
    let one = start(env()).await;
    let two = start(env()).await;

    let connect = |address: String| async move {
        Channel::from_shared(address)
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let mut admin = AdminClient::new(connect(one.address.clone()).await);
    let tenant_id = format!("pair-{}", std::process::id());
    let key = admin
        .create_tenant(authed(
            CreateTenantRequest {
                tenant_id: tenant_id.clone(),
                name: tenant_id.clone(),
                ..Default::default()
            },
            OPERATOR_KEY,
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap()
        .token;
    let counter = json!({
        "flow_id": "counter", "name": "Counter", "version": "1", "initial_state": "count",
        "variables": { "count": 0 },
        "states": { "count": {
            "type": "response",
            "config": { "response_templates": { "default": "{{ variables.count }}" } },
            "transitions": [ { "condition": "any_input", "target_state": "count",
                "actions": [ { "type": "set_variable", "name": "count", "expression": "variables.count + 1" } ] } ]
        } }
    });
    admin
        .publish_flow(authed(
            PublishFlowRequest {
                tenant_id: tenant_id.clone(),
                definition: counter.to_string(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap();
    let mut clients = [
        McpEngineClient::new(connect(one.address.clone()).await),
        McpEngineClient::new(connect(two.address.clone()).await),
    ];
    for turn in 1..=10 {
        let client = &mut clients[turn % 2];
        let reply = client
            .process_message(authed(
                message(&tenant_id, "shared", &format!("turn {turn}")),
                &key,
            ))
            .await
            .unwrap()
            .into_inner();
        let state = reply.conversation_state.unwrap();
        assert_eq!(
            state.message_count, turn as i32,
            "turn {turn} saw every turn before it"
        );
        let count = state.variables.unwrap().fields["count"].kind.clone();
        assert_eq!(
            count,
            Some(prost_types::value::Kind::NumberValue(turn as f64)),
            "turn {turn}"
        );
    }
}

/// Python's grpcio-reflection, from PyPI, finds the services and resolves
/// ProcessMessage's types from the running server alone. CI installs it
/// and sets MCP_REQUIRE_PYTHON_GRPC=1, so it is never skipped there.
#[tokio::test]
async fn a_foreign_reflection_client_resolves_the_api() {
    if !python_has("grpc_reflection", "grpcio grpcio-reflection") {
        return;
    }
    let engine = start(HashMap::new()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reflection_client.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(engine.address.trim_start_matches("http://"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for service in [
        "grpc.health.v1.Health",
        "mcp.admin.v1.Admin",
        "mcp.engine.v2.MCPEngine",
        "mcp.health.v2.Health",
    ] {
        assert!(text.contains(service), "{service} not listed: {text}");
    }
    assert!(
        text.contains("input: mcp.engine.v2.ProcessMessageRequest tenant_context,conversation_id,user_id,channel,content,session_id,processing_hints,metadata"),
        "{text}"
    );
    assert!(
        text.contains("output: mcp.engine.v2.ProcessMessageResponse"),
        "{text}"
    );
    assert!(
        text.contains("tenant_context: mcp.common.v2.TenantContext tenant_id,"),
        "{text}"
    );
}
