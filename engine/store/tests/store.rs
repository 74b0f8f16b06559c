//! The repositories on every database backend: tenants and keys, flows,
//! plugins, experiments, transcripts; bad input refused with nothing
//! changed; tenants kept apart; two stores on one database kept in step.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use mcp_example_plugins as built;
use mcp_flow::{ExperimentConfig, FlowStore, PluginWorld};
use mcp_store::{
    ExperimentStatus, FlowStatus, PolicySettings, PublishOptions, Scope, Store, StoreError,
    TurnRecord, UploadPlugin,
};
use mcp_wasm::{CacheStatus, UploadError};
use serde_json::json;

use common::{Backend, databases, eventually, tenant_id};

fn plugin(name: &str, version: &str, path: &str) -> UploadPlugin {
    UploadPlugin {
        name: name.into(),
        version: version.into(),
        bytes: std::fs::read(path).unwrap(),
        world: None,
        config: BTreeMap::new(),
    }
}

/// A flow that uses a condition plugin and an action plugin.
fn vip_flow(version: &str) -> String {
    json!({
        "flow_id": "refunds", "name": "Refunds", "version": version, "initial_state": "ask",
        "states": {
            "ask": {
                "type": "response",
                "config": { "response_templates": { "default": "What did you spend?" } },
                "transitions": [ { "condition": "any_input", "target_state": "check" } ]
            },
            "check": {
                "type": "condition",
                "transitions": [
                    { "condition": "plugin", "plugin": "vip-check", "args": { "min_spent": 500 }, "target_state": "vip", "priority": 1 },
                    { "condition": "default", "target_state": "done" }
                ]
            },
            "vip": {
                "type": "end",
                "entry_actions": [ { "type": "plugin", "plugin": "price", "args": { "discount": 0.5 } } ],
                "config": { "message": "VIP." }
            },
            "done": { "type": "end", "config": { "message": "Done." } }
        }
    })
    .to_string()
}

fn plain_flow(flow_id: &str, version: &str) -> String {
    json!({
        "flow_id": flow_id, "name": flow_id, "version": version, "initial_state": "hello",
        "states": {
            "hello": {
                "type": "response",
                "config": { "response_templates": { "default": "Hello from {{ variables.v | default('x') }}" } },
                "transitions": [ { "condition": "any_input", "target_state": "bye" } ]
            },
            "bye": { "type": "end", "config": { "message": "Bye." } }
        }
    })
    .to_string()
}

async fn new_tenant(store: &Store, prefix: &str) -> String {
    let id = tenant_id(prefix);
    store
        .create_tenant(
            Some(&id),
            &format!("Tenant {id}"),
            PolicySettings::default(),
        )
        .await
        .unwrap();
    id
}

async fn for_each_database<F, Fut>(test: F)
where
    F: Fn(Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in databases() {
        eprintln!("-- on {}", backend.name);
        test(backend).await;
    }
}

#[test]
fn both_dialects_define_the_same_schema() {
    let normalise = |text: &str| -> String {
        text.lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("BYTEA", "BLOB")
            .replace(
                "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                "INTEGER PRIMARY KEY AUTOINCREMENT",
            )
    };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut postgres: Vec<_> = std::fs::read_dir(format!("{dir}/postgres"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut sqlite: Vec<_> = std::fs::read_dir(format!("{dir}/sqlite"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    postgres.sort();
    sqlite.sort();
    assert_eq!(postgres, sqlite, "each migration exists in both dialects");
    for file in postgres {
        let file = file.to_string_lossy();
        let pg = std::fs::read_to_string(format!("{dir}/postgres/{file}")).unwrap();
        let lite = std::fs::read_to_string(format!("{dir}/sqlite/{file}")).unwrap();
        assert_eq!(
            normalise(&pg),
            normalise(&lite),
            "{file} differs beyond the dialect"
        );
    }
}

#[tokio::test]
async fn tenants_and_api_keys() {
    for_each_database(|backend| async move {
        let store = common::store(&backend).await;
        let id = new_tenant(&store, "keys").await;

        let duplicate = store
            .create_tenant(Some(&id), "another name", PolicySettings::default())
            .await;
        assert!(
            matches!(
                duplicate,
                Err(StoreError::AlreadyExists { what: "tenant", .. })
            ),
            "{duplicate:?}"
        );
        let bad = store
            .create_tenant(Some("a:b"), "colon", PolicySettings::default())
            .await;
        assert!(
            matches!(&bad, Err(StoreError::Invalid { field, .. }) if field == "tenant_id"),
            "{bad:?}"
        );
        let bad_policy = PolicySettings {
            allow_list: vec!["http://x/path".into()],
            ..Default::default()
        };
        let bad = store.create_tenant(None, "bad policy", bad_policy).await;
        assert!(
            matches!(&bad, Err(StoreError::Invalid { field, .. }) if field == "allow_list"),
            "{bad:?}"
        );
        let generated = store
            .create_tenant(None, &format!("gen {id}"), PolicySettings::default())
            .await
            .unwrap();
        assert!(generated.id.starts_with("t-"), "{}", generated.id);

        let issued = store
            .create_api_key(&id, "ci", &[Scope::Messages, Scope::FlowsWrite])
            .await
            .unwrap();
        let key = store
            .verify_api_key(&issued.token)
            .await
            .unwrap()
            .expect("a fresh key verifies");
        assert_eq!(key.tenant_id, id);
        assert!(key.allows(Scope::Messages) && key.allows(Scope::FlowsWrite));
        assert!(!key.allows(Scope::PluginsWrite));

        let mut wrong = issued.token.clone();
        wrong.pop();
        wrong.push(if issued.token.ends_with('0') {
            '1'
        } else {
            '0'
        });
        assert_eq!(
            store.verify_api_key(&wrong).await.unwrap(),
            None,
            "a wrong secret"
        );
        assert_eq!(store.verify_api_key("not a key").await.unwrap(), None);
        assert_eq!(store.verify_api_key("").await.unwrap(), None);

        let admin = store
            .create_api_key(&id, "admin", &[Scope::Admin])
            .await
            .unwrap();
        assert!(
            store
                .verify_api_key(&admin.token)
                .await
                .unwrap()
                .unwrap()
                .allows(Scope::PluginsWrite)
        );
        assert!(matches!(
            store.create_api_key(&id, "none", &[]).await,
            Err(StoreError::Invalid { .. })
        ));
        assert!(matches!(
            store
                .create_api_key("no-such-tenant", "x", &[Scope::Admin])
                .await,
            Err(StoreError::NotFound { .. })
        ));
        assert!("flows:read".parse::<Scope>().is_err());

        store.revoke_api_key(&id, &issued.key.id).await.unwrap();
        assert_eq!(
            store.verify_api_key(&issued.token).await.unwrap(),
            None,
            "a revoked key"
        );
        let keys = store.list_api_keys(&id).await.unwrap();
        assert_eq!(keys.len(), 2);
        assert!(
            keys.iter()
                .any(|k| k.id == issued.key.id && k.revoked_at_ms.is_some())
        );
        // Another tenant cannot revoke this tenant's key.
        assert!(
            store
                .revoke_api_key(&generated.id, &admin.key.id)
                .await
                .is_err()
        );
        assert!(store.verify_api_key(&admin.token).await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn flows_are_validated_versioned_and_served() {
    for_each_database(|backend| async move {
        let store = common::store(&backend).await;
        let tenant = new_tenant(&store, "flows").await;

        let first = store.publish_flow(&tenant, &plain_flow("hello", "1"), PublishOptions::default()).await.unwrap();
        assert_eq!((first.status, first.is_default), (FlowStatus::Published, true), "a first flow becomes the default");
        let served = store.default_flow(&tenant).await.unwrap();
        assert_eq!((served.flow_id.as_str(), served.version.as_str()), ("hello", "1"));

        // Bad input changes nothing.
        let invalid = json!({ "flow_id": "hello", "name": "x", "version": "2", "initial_state": "nowhere", "states": {} }).to_string();
        match store.publish_flow(&tenant, &invalid, PublishOptions::default()).await {
            Err(StoreError::InvalidFlow(report)) => {
                assert!(report.errors().any(|i| i.path == "initial_state"), "{report}");
            }
            other => panic!("expected an invalid flow, got {other:?}"),
        }
        let again = store.publish_flow(&tenant, &plain_flow("hello", "1"), PublishOptions::default()).await;
        assert!(matches!(again, Err(StoreError::AlreadyExists { what: "flow version", .. })), "{again:?}");
        match store.publish_flow(&tenant, &vip_flow("1"), PublishOptions::default()).await {
            Err(StoreError::InvalidFlow(report)) => {
                let text = report.to_string();
                assert!(text.contains("states.check.transitions[0]") && text.contains("`vip-check` is not installed"), "{text}");
                assert!(text.contains("`price` is not installed"), "{text}");
            }
            other => panic!("expected missing plugins, got {other:?}"),
        }
        assert_eq!(store.list_flow_versions(&tenant, None).await.unwrap().len(), 1, "nothing was stored");

        // Drafts are stored but not served until published.
        let draft = PublishOptions { status: FlowStatus::Draft, make_default: false };
        store.publish_flow(&tenant, &plain_flow("hello", "2"), draft).await.unwrap();
        assert_eq!(store.default_flow(&tenant).await.unwrap().version, "1");
        assert!(store.published_flow(&tenant, "hello", Some("2")).await.is_err());
        let published = store.publish_draft(&tenant, "hello", "2").await.unwrap();
        assert_eq!(published.status, FlowStatus::Published);
        assert_eq!(store.default_flow(&tenant).await.unwrap().version, "2", "the latest published version serves");
        assert_eq!(store.published_flow(&tenant, "hello", Some("1")).await.unwrap().version, "1", "old versions stay servable");

        // A second flow, made the default.
        store.publish_flow(&tenant, &plain_flow("other", "1"), PublishOptions { make_default: true, ..Default::default() }).await.unwrap();
        assert_eq!(store.default_flow(&tenant).await.unwrap().flow_id, "other");
        store.set_default_flow(&tenant, "hello").await.unwrap();
        assert_eq!(FlowStore::default_flow(&store, &tenant).await.unwrap().flow_id, "hello");
        assert!(store.set_default_flow(&tenant, "missing").await.is_err());
        let versions = store.list_flow_versions(&tenant, Some("hello")).await.unwrap();
        assert_eq!(versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(), ["2", "1"]);
        assert!(versions.iter().all(|v| v.is_default));

        let missing = FlowStore::flow(&store, &tenant, "hello", Some("9")).await;
        assert!(matches!(missing, Err(mcp_flow::FlowStoreError::NotFound { .. })), "{missing:?}");
    })
    .await;
}

#[tokio::test]
async fn lookups_tell_the_turn_whether_the_database_was_read() {
    for_each_database(|backend| async move {
        let store = common::store(&backend).await;
        let tenant = new_tenant(&store, "cacheuse").await;
        store
            .publish_flow(
                &tenant,
                &plain_flow("hello", "1"),
                PublishOptions::default(),
            )
            .await
            .unwrap();

        let lookups = || async {
            store.load_plugins(&tenant).await.unwrap();
            store.default_flow(&tenant).await.unwrap();
            store
                .published_flow(&tenant, "hello", Some("1"))
                .await
                .unwrap();
        };
        let ((), first) = mcp_store::track_cache(lookups()).await;
        assert!(
            matches!(first, mcp_store::CacheUse::Miss(n) if n >= 2),
            "{first:?}"
        );
        let ((), second) = mcp_store::track_cache(lookups()).await;
        assert_eq!(second, mcp_store::CacheUse::Hit);

        // A change drops the cached default flow: the next lookup reads again.
        store
            .publish_flow(
                &tenant,
                &plain_flow("hello", "2"),
                PublishOptions::default(),
            )
            .await
            .unwrap();
        let ((), after) = mcp_store::track_cache(lookups()).await;
        assert_eq!(
            after,
            mcp_store::CacheUse::Miss(1),
            "only the default flow was read"
        );
    })
    .await;
}

#[tokio::test]
async fn plugins_are_validated_stored_and_loaded() {
    for_each_database(|backend| async move {
        let store = common::store(&backend).await;
        let tenant = new_tenant(&store, "plugins").await;

        let stored = store
            .upload_plugin(&tenant, plugin("vip-check", "1.0.0", built::VIP_CHECK))
            .await
            .unwrap();
        assert_eq!(
            (stored.world, stored.enabled, stored.active),
            (PluginWorld::Condition, true, true)
        );
        assert_eq!(
            stored.size,
            std::fs::metadata(built::VIP_CHECK).unwrap().len()
        );

        // Bad uploads are refused and change nothing.
        let again = store
            .upload_plugin(&tenant, plugin("vip-check", "1.0.0", built::PRICE))
            .await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists { .. })),
            "{again:?}"
        );
        let mut text = plugin("junk", "1", built::VIP_CHECK);
        text.bytes = b"not wasm at all".to_vec();
        assert!(matches!(
            store.upload_plugin(&tenant, text).await,
            Err(StoreError::Plugin(UploadError::NotWasm))
        ));
        let mut module = plugin("module", "1", built::VIP_CHECK);
        module.bytes = b"\0asm\x01\0\0\0".to_vec();
        let refused = store.upload_plugin(&tenant, module).await;
        assert!(
            matches!(refused, Err(StoreError::Plugin(UploadError::NotAComponent))),
            "{refused:?}"
        );
        let mut huge = plugin("huge", "1", built::VIP_CHECK);
        huge.bytes = vec![0; 33 << 20];
        let refused = store.upload_plugin(&tenant, huge).await;
        assert!(
            matches!(
                refused,
                Err(StoreError::Plugin(UploadError::TooLarge { .. }))
            ),
            "{refused:?}"
        );
        let mut liar = plugin("price", "1", built::PRICE);
        liar.world = Some(PluginWorld::Tool);
        let refused = store.upload_plugin(&tenant, liar).await;
        assert!(
            matches!(
                refused,
                Err(StoreError::Plugin(UploadError::WrongWorld { .. }))
            ),
            "{refused:?}"
        );
        let refused = store
            .upload_plugin(&tenant, plugin("Bad_Name", "1", built::PRICE))
            .await;
        assert!(
            matches!(&refused, Err(StoreError::Invalid { field, .. }) if field == "name"),
            "{refused:?}"
        );
        let refused = store
            .upload_plugin(&tenant, plugin("misfit", "1", built::MISFIT_IMPORT))
            .await;
        assert!(
            matches!(
                refused,
                Err(StoreError::Plugin(UploadError::UnsupportedImport(_)))
            ),
            "{refused:?}"
        );
        let names: Vec<_> = store
            .list_plugins(&tenant)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["vip-check"], "only the good upload is stored");

        // A flow using `price` as an action fails while `price` is missing,
        // and fails when the name belongs to another world.
        let mut wrong = plugin("price", "1", built::ORDER_API);
        wrong.world = None;
        store.upload_plugin(&tenant, wrong).await.unwrap();
        match store
            .publish_flow(&tenant, &vip_flow("1"), PublishOptions::default())
            .await
        {
            Err(StoreError::InvalidFlow(report)) => {
                let text = report.to_string();
                assert!(
                    text.contains("`price` is used as a action plugin but is a tool plugin"),
                    "{text}"
                );
            }
            other => panic!("expected a world mismatch, got {other:?}"),
        }
        store
            .delete_plugin_version(&tenant, "price", "1")
            .await
            .unwrap();
        store
            .upload_plugin(&tenant, plugin("price", "1", built::PRICE))
            .await
            .unwrap();
        store
            .publish_flow(&tenant, &vip_flow("1"), PublishOptions::default())
            .await
            .unwrap();

        // Versions: the newest enabled one is active; disabling moves it back.
        store
            .upload_plugin(&tenant, plugin("vip-check", "2.0.0", built::VIP_CHECK))
            .await
            .unwrap();
        store.load_plugins(&tenant).await.unwrap();
        assert_eq!(
            store.host().resolve(&tenant, "vip-check").unwrap().version,
            "2.0.0"
        );
        let disabled = store
            .set_plugin_enabled(&tenant, "vip-check", "2.0.0", false)
            .await
            .unwrap();
        assert!(!disabled.enabled && !disabled.active);
        store.load_plugins(&tenant).await.unwrap();
        assert_eq!(
            store.host().resolve(&tenant, "vip-check").unwrap().version,
            "1.0.0"
        );
        assert!(
            store
                .host()
                .resolve_version(&tenant, "vip-check", "2.0.0")
                .is_none(),
            "a disabled version is unloaded"
        );
        store
            .set_plugin_enabled(&tenant, "vip-check", "1.0.0", false)
            .await
            .unwrap();
        store.load_plugins(&tenant).await.unwrap();
        assert!(store.host().resolve(&tenant, "vip-check").is_none());
        let refused = store
            .publish_flow(&tenant, &vip_flow("2"), PublishOptions::default())
            .await;
        assert!(
            matches!(refused, Err(StoreError::InvalidFlow(_))),
            "a disabled plugin cannot be used: {refused:?}"
        );
        assert!(
            store
                .set_plugin_enabled(&tenant, "vip-check", "9", true)
                .await
                .is_err()
        );

        // Compiled code is in the database: a fresh host loads it ready-made.
        let fresh = common::host(store.db());
        let inspected = fresh
            .inspect(&std::fs::read(built::PRICE).unwrap())
            .await
            .unwrap();
        assert_eq!(inspected.cache, CacheStatus::Stored);
    })
    .await;
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    for_each_database(|backend| async move {
        let store = common::store(&backend).await;
        let a = new_tenant(&store, "iso-a").await;
        let b = new_tenant(&store, "iso-b").await;
        store
            .upload_plugin(&a, plugin("vip-check", "1", built::VIP_CHECK))
            .await
            .unwrap();
        store
            .upload_plugin(&a, plugin("price", "1", built::PRICE))
            .await
            .unwrap();
        store
            .publish_flow(&a, &vip_flow("1"), PublishOptions::default())
            .await
            .unwrap();
        store.record_turn(&a, &turn("c-1", 1)).await.unwrap();

        assert!(store.list_plugins(&b).await.unwrap().is_empty());
        assert!(store.list_flow_versions(&b, None).await.unwrap().is_empty());
        assert!(store.published_flow(&b, "refunds", None).await.is_err());
        assert!(store.flow_version(&b, "refunds", "1").await.is_err());
        assert!(store.default_flow(&b).await.is_err());
        assert!(store.transcript(&b, "c-1", 100).await.unwrap().is_empty());
        store.load_plugins(&b).await.unwrap();
        assert!(store.host().resolve(&b, "vip-check").is_none());
        assert!(
            store
                .set_plugin_enabled(&b, "vip-check", "1", false)
                .await
                .is_err()
        );
        assert!(store.delete_plugin_version(&b, "price", "1").await.is_err());
        // B cannot publish a flow using A's plugins.
        assert!(matches!(
            store
                .publish_flow(&b, &vip_flow("1"), PublishOptions::default())
                .await,
            Err(StoreError::InvalidFlow(_))
        ));
        // And A still has everything.
        store.load_plugins(&a).await.unwrap();
        assert!(store.host().resolve(&a, "vip-check").is_some());
        assert_eq!(store.transcript(&a, "c-1", 100).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_change_through_one_store_reaches_another_within_a_second() {
    for_each_database(|backend| async move {
        let one = common::store(&backend).await;
        let two = common::store(&backend).await;
        let tenant = new_tenant(&one, "shared").await;
        one.publish_flow(
            &tenant,
            &plain_flow("hello", "1"),
            PublishOptions::default(),
        )
        .await
        .unwrap();

        // The second store caches what it has seen...
        two.load_plugins(&tenant).await.unwrap();
        assert!(two.host().resolve(&tenant, "vip-check").is_none());
        assert_eq!(two.default_flow(&tenant).await.unwrap().version, "1");

        // ...and still serves every change made through the first within a second.
        one.upload_plugin(&tenant, plugin("vip-check", "1", built::VIP_CHECK))
            .await
            .unwrap();
        let served = eventually(Duration::from_secs(1), || async {
            two.load_plugins(&tenant).await.unwrap();
            two.host().resolve(&tenant, "vip-check").is_some()
        })
        .await;
        assert!(
            served,
            "{}: the upload did not reach the second store",
            backend.name
        );
        let flow = two.default_flow(&tenant).await.unwrap().flow;
        let conversation = mcp_flow::Conversation::new(&tenant, "c", "u", &flow, 0);
        let verdict = mcp_flow::PluginRuntime::evaluate_condition(
            two.host(),
            mcp_flow::PluginCall {
                tenant_id: &tenant,
                plugin: "vip-check",
                version: None,
                args: &json!({ "min_spent": 10 }),
                conversation: &conversation,
                event: None,
                timeout: Duration::from_secs(5),
            },
        )
        .await;
        assert!(
            verdict.is_ok(),
            "the second store runs the plugin: {verdict:?}"
        );

        one.publish_flow(
            &tenant,
            &plain_flow("hello", "2"),
            PublishOptions::default(),
        )
        .await
        .unwrap();
        let served = eventually(Duration::from_secs(1), || async {
            two.default_flow(&tenant).await.unwrap().version == "2"
        })
        .await;
        assert!(
            served,
            "{}: the new flow version did not reach the second store",
            backend.name
        );

        one.set_plugin_enabled(&tenant, "vip-check", "1", false)
            .await
            .unwrap();
        let gone = eventually(Duration::from_secs(1), || async {
            two.load_plugins(&tenant).await.unwrap();
            two.host().resolve(&tenant, "vip-check").is_none()
        })
        .await;
        assert!(
            gone,
            "{}: the disabled plugin is still served by the second store",
            backend.name
        );
    })
    .await;
}

#[tokio::test]
async fn experiments_are_validated_and_stoppable() {
    for_each_database(|backend| async move {
        let store = common::store(&backend).await;
        let tenant = new_tenant(&store, "ab").await;
        store.publish_flow(&tenant, &plain_flow("hello", "1"), PublishOptions::default()).await.unwrap();
        store.publish_flow(&tenant, &plain_flow("hello", "2"), PublishOptions::default()).await.unwrap();
        let config = |id: &str, b_share: f64, b_version: &str| -> ExperimentConfig {
            serde_json::from_value(json!({
                "experiment_id": id, "name": "greeting test", "start_date": "2026-01-01T00:00:00Z",
                "variants": [
                    { "name": "a", "percentage": 50.0, "modifications": { "flow_id": "hello", "flow_version": "1" } },
                    { "name": "b", "percentage": b_share, "modifications": { "flow_id": "hello", "flow_version": b_version } }
                ]
            }))
            .unwrap()
        };
        let created = store.create_experiment(&tenant, config("exp-1", 50.0, "2")).await.unwrap();
        assert_eq!(created.status, ExperimentStatus::Running);
        assert_eq!(store.running_experiments(&tenant).await.unwrap().len(), 1);

        let bad_shares = store.create_experiment(&tenant, config("exp-2", 40.0, "2")).await;
        assert!(matches!(bad_shares, Err(StoreError::Invalid { .. })), "{bad_shares:?}");
        let bad_flow = store.create_experiment(&tenant, config("exp-3", 50.0, "7")).await;
        assert!(matches!(&bad_flow, Err(StoreError::Invalid { field, .. }) if field == "variants[1].modifications"), "{bad_flow:?}");
        let duplicate = store.create_experiment(&tenant, config("exp-1", 50.0, "2")).await;
        assert!(matches!(duplicate, Err(StoreError::AlreadyExists { .. })), "{duplicate:?}");
        assert_eq!(store.list_experiments(&tenant).await.unwrap().len(), 1, "bad experiments were not stored");

        store.stop_experiment(&tenant, "exp-1").await.unwrap();
        assert!(store.running_experiments(&tenant).await.unwrap().is_empty());
        assert!(store.stop_experiment(&tenant, "exp-1").await.is_err());
        assert_eq!(store.list_experiments(&tenant).await.unwrap()[0].status, ExperimentStatus::Stopped);
    })
    .await;
}

fn turn(conversation: &str, n: u64) -> TurnRecord {
    TurnRecord {
        conversation_id: conversation.into(),
        started_at_ms: 1_000,
        turn: n,
        flow_id: "hello".into(),
        flow_version: "1".into(),
        state_before: "hello".into(),
        state_after: "bye".into(),
        input: json!({ "text": format!("message {n}") }),
        output: json!({ "messages": [ "Bye." ] }),
        received_at_ms: 1_000 + n as i64,
        duration_us: 120,
    }
}

#[tokio::test]
async fn transcripts_keep_every_turn_in_order() {
    for_each_database(|backend| async move {
        let store = common::store(&backend).await;
        let tenant = new_tenant(&store, "transcript").await;
        for n in [2, 1, 3] {
            store.record_turn(&tenant, &turn("c-1", n)).await.unwrap();
        }
        store.record_turn(&tenant, &turn("c-1", 3)).await.unwrap();
        let turns = store.transcript(&tenant, "c-1", 100).await.unwrap();
        assert_eq!(turns.iter().map(|t| t.turn).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(turns[0], turn("c-1", 1));
        let last_two = store.transcript(&tenant, "c-1", 2).await.unwrap();
        assert_eq!(last_two.iter().map(|t| t.turn).collect::<Vec<_>>(), [2, 3]);
    })
    .await;
}

#[tokio::test]
async fn concurrent_writes_for_one_tenant_all_land() {
    for_each_database(|backend| async move {
        let store = common::store(&backend).await;
        let tenant = new_tenant(&store, "race").await;
        let publishes = (1..=8).map(|v| {
            let (store, tenant) = (store.clone(), tenant.clone());
            async move {
                store
                    .publish_flow(
                        &tenant,
                        &plain_flow(&format!("flow-{}", v % 2), &v.to_string()),
                        PublishOptions::default(),
                    )
                    .await
            }
        });
        for published in futures::future::join_all(publishes).await {
            published.unwrap();
        }
        let versions = store.list_flow_versions(&tenant, None).await.unwrap();
        assert_eq!(versions.len(), 8, "{}", backend.name);
        let defaults: std::collections::BTreeSet<_> = versions
            .iter()
            .filter(|v| v.is_default)
            .map(|v| v.flow_id.clone())
            .collect();
        assert_eq!(
            defaults.len(),
            1,
            "{}: exactly one default flow",
            backend.name
        );
    })
    .await;
}
