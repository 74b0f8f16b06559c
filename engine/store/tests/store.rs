//! The repositories on every database backend: tenants and keys, flows,
//! plugins, experiments, transcripts; bad input refused with nothing
//! changed; tenants kept apart; two stores on one database kept in step.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mcp_flow::{ExperimentConfig, PluginWorld};
use mcp_store::{
    ExperimentStatus, FlowStatus, NewPlugin, PolicySettings, PublishOptions, Scope, StoreError,
    TenantPlugins, TurnRecord,
};
use serde_json::json;

use common::{Backend, databases, eventually, new_tenant, plain_flow, vip_flow};

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
        assert_eq!(store.default_flow(&tenant).await.unwrap().flow_id, "hello");
        assert!(store.set_default_flow(&tenant, "missing").await.is_err());
        let versions = store.list_flow_versions(&tenant, Some("hello")).await.unwrap();
        assert_eq!(versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(), ["2", "1"]);
        assert!(versions.iter().all(|v| v.is_default));

        let missing = store.published_flow(&tenant, "hello", Some("9")).await;
        assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");
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
            store.tenant_plugins(&tenant).await.unwrap();
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

/// A plugin row as the registry would store it after inspection; the store
/// never looks inside the bytes.
fn row(name: &str, version: &str, world: PluginWorld) -> NewPlugin {
    let bytes = format!("component {name}@{version}").into_bytes();
    NewPlugin {
        name: name.into(),
        version: version.into(),
        world,
        bytes,
        manifest: None,
        config: BTreeMap::from([("greeting".to_owned(), "hi".to_owned())]),
    }
}

#[tokio::test]
async fn plugin_rows_are_checked_stored_and_served() {
    for_each_database(|backend| async move {
        let store = common::store(&backend).await;
        let tenant = new_tenant(&store, "plugins").await;

        let stored = store
            .insert_plugin(&tenant, row("vip-check", "1.0.0", PluginWorld::Condition))
            .await
            .unwrap();
        assert_eq!(
            (stored.world, stored.enabled, stored.active),
            (PluginWorld::Condition, true, true)
        );
        assert_eq!(stored.size, "component vip-check@1.0.0".len() as u64);
        assert_eq!(
            store
                .plugin_bytes(&tenant, "vip-check", "1.0.0")
                .await
                .unwrap(),
            b"component vip-check@1.0.0"
        );

        // Bad rows are refused and change nothing.
        let again = store
            .insert_plugin(&tenant, row("vip-check", "1.0.0", PluginWorld::Action))
            .await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists { .. })),
            "{again:?}"
        );
        let refused = store
            .insert_plugin(&tenant, row("Bad_Name", "1", PluginWorld::Action))
            .await;
        assert!(
            matches!(&refused, Err(StoreError::Invalid { field, .. }) if field == "name"),
            "{refused:?}"
        );
        let refused = store.check_new_plugin(&tenant, "price", "1 0").await;
        assert!(
            matches!(&refused, Err(StoreError::Invalid { field, .. }) if field == "version"),
            "{refused:?}"
        );
        let refused = store.check_new_plugin("no-such-tenant", "price", "1").await;
        assert!(
            matches!(refused, Err(StoreError::NotFound { what: "tenant", .. })),
            "{refused:?}"
        );
        let names: Vec<_> = store
            .list_plugins(&tenant)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["vip-check"], "only the good row is stored");

        // A flow using `price` as an action fails while `price` is missing,
        // and fails when the name belongs to another world.
        store
            .insert_plugin(&tenant, row("price", "1", PluginWorld::Tool))
            .await
            .unwrap();
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
            .insert_plugin(&tenant, row("price", "1", PluginWorld::Action))
            .await
            .unwrap();
        store
            .publish_flow(&tenant, &vip_flow("1"), PublishOptions::default())
            .await
            .unwrap();

        // Versions: the newest enabled one is active; disabling moves it back.
        store
            .insert_plugin(&tenant, row("vip-check", "2.0.0", PluginWorld::Condition))
            .await
            .unwrap();
        let enabled = |plugins: &TenantPlugins| -> Vec<String> {
            plugins
                .enabled
                .iter()
                .map(|p| format!("{}@{}", p.name, p.version))
                .collect()
        };
        let plugins = store.tenant_plugins(&tenant).await.unwrap();
        assert_eq!(
            enabled(&plugins),
            ["price@1", "vip-check@1.0.0", "vip-check@2.0.0"],
            "by name, then upload order: the last of each is active"
        );
        assert_eq!(plugins.enabled[0].config["greeting"], "hi");
        let disabled = store
            .set_plugin_enabled(&tenant, "vip-check", "2.0.0", false)
            .await
            .unwrap();
        assert!(!disabled.enabled && !disabled.active);
        let active: Vec<_> = store
            .list_plugins(&tenant)
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p.active)
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect();
        assert_eq!(active, ["price@1", "vip-check@1.0.0"]);
        assert_eq!(
            enabled(&store.tenant_plugins(&tenant).await.unwrap()),
            ["price@1", "vip-check@1.0.0"],
            "a disabled version is no longer served"
        );
        store
            .set_plugin_enabled(&tenant, "vip-check", "1.0.0", false)
            .await
            .unwrap();
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

        // Compiled code is kept by its two hashes, first save wins.
        let db = store.db();
        assert_eq!(db.artifact("c0ffee", "engine-1").await.unwrap(), None);
        db.save_artifact("c0ffee", "engine-1", b"compiled")
            .await
            .unwrap();
        db.save_artifact("c0ffee", "engine-1", b"again")
            .await
            .unwrap();
        assert_eq!(
            db.artifact("c0ffee", "engine-1").await.unwrap().as_deref(),
            Some(&b"compiled"[..])
        );
        assert_eq!(db.artifact("c0ffee", "engine-2").await.unwrap(), None);
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
            .insert_plugin(&a, row("vip-check", "1", PluginWorld::Condition))
            .await
            .unwrap();
        store
            .insert_plugin(&a, row("price", "1", PluginWorld::Action))
            .await
            .unwrap();
        store
            .publish_flow(&a, &vip_flow("1"), PublishOptions::default())
            .await
            .unwrap();
        store.record_turn(&a, &turn("c-1", 1)).await.unwrap();

        assert!(store.list_plugins(&b).await.unwrap().is_empty());
        assert!(store.tenant_plugins(&b).await.unwrap().enabled.is_empty());
        assert!(store.plugin_bytes(&b, "price", "1").await.is_err());
        assert!(store.list_flow_versions(&b, None).await.unwrap().is_empty());
        assert!(store.published_flow(&b, "refunds", None).await.is_err());
        assert!(store.flow_version(&b, "refunds", "1").await.is_err());
        assert!(store.default_flow(&b).await.is_err());
        assert!(store.transcript(&b, "c-1", 100).await.unwrap().is_empty());
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
        assert_eq!(store.tenant_plugins(&a).await.unwrap().enabled.len(), 2);
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
        let seen = two.tenant_plugins(&tenant).await.unwrap();
        assert!(seen.enabled.is_empty());
        assert!(
            Arc::ptr_eq(&seen, &two.tenant_plugins(&tenant).await.unwrap()),
            "served from memory while nothing changed"
        );
        assert_eq!(two.default_flow(&tenant).await.unwrap().version, "1");

        // ...and still serves every change made through the first within a second.
        one.insert_plugin(&tenant, row("vip-check", "1", PluginWorld::Condition))
            .await
            .unwrap();
        let served = eventually(Duration::from_secs(1), || async {
            two.tenant_plugins(&tenant).await.unwrap().enabled.len() == 1
        })
        .await;
        assert!(
            served,
            "{}: the new plugin did not reach the second store",
            backend.name
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
            two.tenant_plugins(&tenant)
                .await
                .unwrap()
                .enabled
                .is_empty()
        })
        .await;
        assert!(
            gone,
            "{}: the disabled plugin is still served by the second store",
            backend.name
        );

        let policy = PolicySettings {
            allow_list: vec!["api.example.com".into()],
            mcp_servers: [(
                "crm".to_owned(),
                mcp_flow::RemoteMcpServer {
                    url: "https://api.example.com/mcp".into(),
                    token: Some("secret".into()),
                },
            )]
            .into(),
            ..PolicySettings::default()
        };
        one.set_tenant_policy(&tenant, policy.clone())
            .await
            .unwrap();
        let applied = eventually(Duration::from_secs(1), || async {
            two.tenant_plugins(&tenant).await.unwrap().policy == policy
        })
        .await;
        assert!(
            applied,
            "{}: the new policy did not reach the second store",
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

#[tokio::test]
async fn verified_keys_are_served_from_memory_and_revocations_reach_every_process() {
    for_each_database(|backend| async move {
        let one = common::store(&backend).await;
        let tenant = new_tenant(&one, "keycache").await;
        let issued = one
            .create_api_key(&tenant, "ci", &[Scope::Messages])
            .await
            .unwrap();
        // Opened after the key's creation, so that change's message (which
        // would drop what it caches) never reaches it.
        let two = common::store(&backend).await;
        let unknown = "mcpk_0123456789abcdef_nosuchsecret";
        assert!(two.verify_api_key(&issued.token).await.unwrap().is_some());
        assert_eq!(two.verify_api_key(unknown).await.unwrap(), None);

        // Removed behind the stores' backs (no change recorded): the second
        // store still knows the key, so it did not ask the database again.
        let pool = sqlx::AnyPool::connect(backend.settings.url.as_deref().unwrap())
            .await
            .unwrap();
        let removed = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(&issued.key.id)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(removed.rows_affected(), 1);
        assert!(
            two.verify_api_key(&issued.token).await.unwrap().is_some(),
            "served from memory"
        );
        let mut wrong = issued.token.clone();
        wrong.push('x');
        assert_eq!(
            two.verify_api_key(&wrong).await.unwrap(),
            None,
            "a cached key still needs its secret"
        );

        // A key revoked through the first store is refused by the second
        // within a second.
        let second = one
            .create_api_key(&tenant, "second", &[Scope::Messages])
            .await
            .unwrap();
        assert!(two.verify_api_key(&second.token).await.unwrap().is_some());
        one.revoke_api_key(&tenant, &second.key.id).await.unwrap();
        assert_eq!(
            one.verify_api_key(&second.token).await.unwrap(),
            None,
            "at once where it was revoked"
        );
        let refused = eventually(Duration::from_secs(1), || async {
            two.verify_api_key(&second.token).await.unwrap().is_none()
        })
        .await;
        assert!(
            refused,
            "{}: the revocation did not reach the second store",
            backend.name
        );
    })
    .await;
}
