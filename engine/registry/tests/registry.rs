//! The plugin registry over every database backend: uploads validated by
//! the host before they are stored, stored versions loaded and activated per
//! tenant, tenant policies checked, and two engine processes on one database
//! kept in step.

// The store's test backends (SQLite always, PostgreSQL when DATABASE_URL is
// set), shared rather than copied.
#[path = "../../store/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mcp_example_plugins as built;
use mcp_flow::{LimitOverrides, PluginWorld, PolicySettings};
use mcp_registry::{PluginRegistry, RegistryError, UploadLimits, UploadPlugin, artifact_store};
use mcp_store::{Database, PublishOptions, StoreError};
use mcp_testkit::unique_component;
use mcp_wasm::{CacheStatus, HostConfig, PluginHost, UploadError};
use serde_json::json;

use common::{Backend, databases, eventually, new_tenant, plain_flow, tenant_id};

/// A plugin host of its own (small pool), persisting compiled code in `db`.
fn host(db: &Database) -> PluginHost {
    PluginHost::new(HostConfig {
        max_instances: 16,
        artifacts: Some(artifact_store(db)),
        ..HostConfig::default()
    })
    .unwrap()
}

/// What one engine process holds: a store and a host over one database.
async fn registry(backend: &Backend) -> PluginRegistry {
    let store = common::store(backend).await;
    let host = host(store.db());
    PluginRegistry::new(store, host)
}

fn plugin(name: &str, version: &str, path: &str) -> UploadPlugin {
    UploadPlugin {
        name: name.into(),
        version: version.into(),
        bytes: std::fs::read(path).unwrap(),
        world: None,
        config: BTreeMap::new(),
    }
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

#[tokio::test]
async fn plugins_are_validated_stored_and_loaded() {
    for_each_database(|backend| async move {
        let registry = registry(&backend).await;
        let store = registry.store();
        let tenant = new_tenant(store, "plugins").await;

        let stored = registry
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
        let again = registry
            .upload_plugin(&tenant, plugin("vip-check", "1.0.0", built::PRICE))
            .await;
        assert!(
            matches!(again, Err(RegistryError::Store(StoreError::AlreadyExists { .. }))),
            "{again:?}"
        );
        let mut text = plugin("junk", "1", built::VIP_CHECK);
        text.bytes = b"not wasm at all".to_vec();
        assert!(matches!(
            registry.upload_plugin(&tenant, text).await,
            Err(RegistryError::Plugin(UploadError::NotWasm))
        ));
        let mut module = plugin("module", "1", built::VIP_CHECK);
        module.bytes = b"\0asm\x01\0\0\0".to_vec();
        let refused = registry.upload_plugin(&tenant, module).await;
        assert!(
            matches!(refused, Err(RegistryError::Plugin(UploadError::NotAComponent))),
            "{refused:?}"
        );
        let mut huge = plugin("huge", "1", built::VIP_CHECK);
        huge.bytes = vec![0; 33 << 20];
        let refused = registry.upload_plugin(&tenant, huge).await;
        assert!(
            matches!(
                refused,
                Err(RegistryError::Plugin(UploadError::TooLarge { .. }))
            ),
            "{refused:?}"
        );
        let mut liar = plugin("price", "1", built::PRICE);
        liar.world = Some(PluginWorld::Tool);
        let refused = registry.upload_plugin(&tenant, liar).await;
        assert!(
            matches!(
                refused,
                Err(RegistryError::Plugin(UploadError::WrongWorld { .. }))
            ),
            "{refused:?}"
        );
        let refused = registry
            .upload_plugin(&tenant, plugin("Bad_Name", "1", built::PRICE))
            .await;
        assert!(
            matches!(&refused, Err(RegistryError::Store(StoreError::Invalid { field, .. })) if field == "name"),
            "{refused:?}"
        );
        let refused = registry
            .upload_plugin(&tenant, plugin("misfit", "1", built::MISFIT_IMPORT))
            .await;
        assert!(
            matches!(
                refused,
                Err(RegistryError::Plugin(UploadError::UnsupportedImport(_)))
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

        // The world stored is the one the host found; a version deleted and
        // uploaded again with other bytes is installed anew.
        let mut unclaimed = plugin("price", "1", built::ORDER_API);
        unclaimed.world = None;
        let stored = registry.upload_plugin(&tenant, unclaimed).await.unwrap();
        assert_eq!(stored.world, PluginWorld::Tool);
        assert_eq!(
            registry.host().resolve(&tenant, "price").unwrap().world,
            PluginWorld::Tool
        );
        store
            .delete_plugin_version(&tenant, "price", "1")
            .await
            .unwrap();
        let stored = registry
            .upload_plugin(&tenant, plugin("price", "1", built::PRICE))
            .await
            .unwrap();
        assert_eq!(stored.world, PluginWorld::Action);
        assert_eq!(
            registry.host().resolve(&tenant, "price").unwrap().world,
            PluginWorld::Action
        );

        // Versions: the newest enabled one is active; disabling moves it back.
        registry
            .upload_plugin(&tenant, plugin("vip-check", "2.0.0", built::VIP_CHECK))
            .await
            .unwrap();
        // Once this process has heard of its own change (PostgreSQL
        // announces it back), a load with nothing changed has no work.
        let idle = || async { !registry.load_plugins(&tenant).await.unwrap() };
        assert!(eventually(Duration::from_secs(1), idle).await);
        assert_eq!(
            registry.host().resolve(&tenant, "vip-check").unwrap().version,
            "2.0.0"
        );
        let disabled = store
            .set_plugin_enabled(&tenant, "vip-check", "2.0.0", false)
            .await
            .unwrap();
        assert!(!disabled.enabled && !disabled.active);
        assert!(
            registry.load_plugins(&tenant).await.unwrap(),
            "a change is work"
        );
        assert!(eventually(Duration::from_secs(1), idle).await);
        assert_eq!(
            registry.host().resolve(&tenant, "vip-check").unwrap().version,
            "1.0.0"
        );
        assert!(
            registry
                .host()
                .resolve_version(&tenant, "vip-check", "2.0.0")
                .is_none(),
            "a disabled version is unloaded"
        );
        store
            .set_plugin_enabled(&tenant, "vip-check", "1.0.0", false)
            .await
            .unwrap();
        registry.load_plugins(&tenant).await.unwrap();
        assert!(registry.host().resolve(&tenant, "vip-check").is_none());
        assert!(
            store
                .set_plugin_enabled(&tenant, "vip-check", "9", true)
                .await
                .is_err()
        );

        // Compiled code is in the database: a fresh host loads it ready-made.
        let fresh = host(store.db());
        let inspected = fresh
            .inspect(&std::fs::read(built::PRICE).unwrap())
            .await
            .unwrap();
        assert_eq!(inspected.cache, CacheStatus::Stored);
    })
    .await;
}

#[tokio::test]
async fn tenants_never_see_each_others_plugins() {
    for_each_database(|backend| async move {
        let registry = registry(&backend).await;
        let store = registry.store();
        let a = new_tenant(store, "iso-a").await;
        let b = new_tenant(store, "iso-b").await;
        registry
            .upload_plugin(&a, plugin("vip-check", "1", built::VIP_CHECK))
            .await
            .unwrap();
        registry.load_plugins(&b).await.unwrap();
        assert!(registry.host().resolve(&b, "vip-check").is_none());
        // And A still has everything.
        registry.load_plugins(&a).await.unwrap();
        assert!(registry.host().resolve(&a, "vip-check").is_some());
    })
    .await;
}

#[tokio::test]
async fn a_change_through_one_registry_reaches_another_within_a_second() {
    for_each_database(|backend| async move {
        let one = registry(&backend).await;
        let two = registry(&backend).await;
        let tenant = new_tenant(one.store(), "shared").await;
        one.store()
            .publish_flow(
                &tenant,
                &plain_flow("hello", "1"),
                PublishOptions::default(),
            )
            .await
            .unwrap();

        // The second registry caches what it has seen...
        two.load_plugins(&tenant).await.unwrap();
        assert!(two.host().resolve(&tenant, "vip-check").is_none());

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
            "{}: the upload did not reach the second registry",
            backend.name
        );
        let flow = two.store().default_flow(&tenant).await.unwrap().flow;
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
            "the second registry runs the plugin: {verdict:?}"
        );

        // (Flow changes reaching the second store: the store's own tests.)
        one.store()
            .set_plugin_enabled(&tenant, "vip-check", "1", false)
            .await
            .unwrap();
        let gone = eventually(Duration::from_secs(1), || async {
            two.load_plugins(&tenant).await.unwrap();
            two.host().resolve(&tenant, "vip-check").is_none()
        })
        .await;
        assert!(
            gone,
            "{}: the disabled plugin is still served by the second registry",
            backend.name
        );
    })
    .await;
}

#[tokio::test]
async fn policies_the_host_cannot_enforce_are_refused_and_change_nothing() {
    for_each_database(|backend| async move {
        let registry = registry(&backend).await;
        let tenant = tenant_id("policy");
        let bad_host = PolicySettings {
            allow_list: vec!["http://x/path".into()],
            ..PolicySettings::default()
        };
        let refused = registry
            .create_tenant(Some(&tenant), "Policy", bad_host.clone())
            .await;
        assert!(
            matches!(&refused, Err(RegistryError::Policy(e)) if e.field == "allow_list"),
            "{refused:?}"
        );
        assert!(
            registry.store().tenant(&tenant).await.is_err(),
            "no tenant was created"
        );
        let bad_server = PolicySettings {
            mcp_servers: [(
                "crm".to_owned(),
                mcp_flow::RemoteMcpServer {
                    url: "ftp://crm.example.com/mcp".into(),
                    token: None,
                },
            )]
            .into(),
            ..PolicySettings::default()
        };
        let refused = registry
            .create_tenant(Some(&tenant), "Policy", bad_server)
            .await;
        assert!(
            matches!(&refused, Err(RegistryError::Policy(e)) if e.field == "mcp_servers.crm.url"),
            "{refused:?}"
        );

        registry
            .create_tenant(Some(&tenant), "Policy", PolicySettings::default())
            .await
            .unwrap();
        let too_much = PolicySettings {
            limits: HashMap::from([(
                PluginWorld::Tool,
                LimitOverrides {
                    memory_bytes: Some(1 << 40),
                    ..LimitOverrides::default()
                },
            )]),
            ..PolicySettings::default()
        };
        let refused = registry.set_tenant_policy(&tenant, too_much).await;
        assert!(
            matches!(&refused, Err(RegistryError::Policy(e)) if e.field == "limits.tool.memory_bytes"),
            "{refused:?}"
        );
        let zero = PolicySettings {
            limits: HashMap::from([(
                PluginWorld::Condition,
                LimitOverrides {
                    fuel: Some(0),
                    ..LimitOverrides::default()
                },
            )]),
            ..PolicySettings::default()
        };
        assert!(matches!(
            registry.set_tenant_policy(&tenant, zero).await,
            Err(RegistryError::Policy(_))
        ));
        assert_eq!(
            registry.store().tenant(&tenant).await.unwrap().policy,
            PolicySettings::default(),
            "the stored policy is unchanged"
        );

        assert!(registry.load_plugins(&tenant).await.unwrap());
        let idle = || async { !registry.load_plugins(&tenant).await.unwrap() };
        assert!(eventually(Duration::from_secs(1), idle).await);
        let good = PolicySettings {
            allow_list: vec!["api.example.com".into(), "127.0.0.1:8080".into()],
            ..PolicySettings::default()
        };
        registry
            .set_tenant_policy(&tenant, good.clone())
            .await
            .unwrap();
        assert_eq!(registry.store().tenant(&tenant).await.unwrap().policy, good);
        assert!(
            registry.load_plugins(&tenant).await.unwrap(),
            "a new policy is applied to the host"
        );
    })
    .await;
}

#[tokio::test]
async fn a_refused_upload_leaves_nothing_behind() {
    for_each_database(|backend| async move {
        let registry = registry(&backend).await;
        let store = registry.store();
        let tenant = new_tenant(store, "refused").await;
        let host = registry.host();
        let stored_artifact = |bytes: Vec<u8>| {
            let db = store.db().clone();
            let engine = host.engine_hash().to_owned();
            async move {
                db.artifact(&mcp_wasm::cache::sha256_hex(&bytes), &engine)
                    .await
                    .unwrap()
            }
        };

        // Compiled, then refused: for what it imports, for the world it
        // claims, for what describe() says.
        let mut misfit = plugin("misfit", "1", built::MISFIT_IMPORT);
        misfit.bytes = unique_component(misfit.bytes, "misfit");
        let mut liar = plugin("order-api", "1", built::ORDER_API);
        liar.bytes = unique_component(liar.bytes, "liar");
        liar.world = Some(PluginWorld::Condition);
        for upload in [misfit, liar] {
            let bytes = upload.bytes.clone();
            let refused = registry.upload_plugin(&tenant, upload).await;
            assert!(
                matches!(refused, Err(RegistryError::Plugin(_))),
                "{refused:?}"
            );
            assert!(!host.is_compiled(&bytes), "kept compiled in memory");
            assert_eq!(stored_artifact(bytes).await, None, "kept in the database");
        }
        assert!(store.list_plugins(&tenant).await.unwrap().is_empty());
        assert_eq!(host.compiled_cache_usage().0, 0, "nothing cached");

        // Accepted: kept compiled, in memory and in the database.
        let mut good = plugin("vip-check", "1", built::VIP_CHECK);
        good.bytes = unique_component(good.bytes, "good");
        let bytes = good.bytes.clone();
        registry.upload_plugin(&tenant, good).await.unwrap();
        assert!(host.is_compiled(&bytes));
        assert!(stored_artifact(bytes.clone()).await.is_some());

        // Deleted, its compiled code goes at the next prune.
        store
            .delete_plugin_version(&tenant, "vip-check", "1")
            .await
            .unwrap();
        assert!(store.db().prune_artifacts().await.unwrap() >= 1);
        assert_eq!(stored_artifact(bytes).await, None);
    })
    .await;
}

#[tokio::test]
async fn uploads_are_bounded_per_tenant_overall_and_by_quota() {
    for_each_database(|backend| async move {
        let store = common::store(&backend).await;
        let vip = std::fs::read(built::VIP_CHECK).unwrap();
        let registry = PluginRegistry::with_limits(
            store.clone(),
            host(store.db()),
            UploadLimits {
                parallel: 2,
                tenant_bytes: 2 * vip.len() as u64 + 200,
            },
        );
        let (a, b, c) = (
            new_tenant(&store, "quota-a").await,
            new_tenant(&store, "quota-b").await,
            new_tenant(&store, "quota-c").await,
        );
        let upload = |name: &str, tag: &str| {
            let mut upload = plugin(name, "1", built::VIP_CHECK);
            upload.bytes = unique_component(upload.bytes, tag);
            upload
        };

        // One upload per tenant at a time: compiling takes far longer than
        // the other's checks before it asks for its slot.
        let (first, second) = tokio::join!(
            registry.upload_plugin(&a, upload("one", "a1")),
            registry.upload_plugin(&a, upload("two", "a2")),
        );
        let busy = [&first, &second]
            .iter()
            .filter(|r| matches!(r, Err(RegistryError::Busy(m)) if m.contains("this tenant")))
            .count();
        assert_eq!(busy, 1, "{first:?} {second:?}");
        assert!(first.is_ok() || second.is_ok());

        // Two uploads in the process at a time: a third tenant's waits its turn.
        let (x, y, z) = tokio::join!(
            registry.upload_plugin(&a, upload("three", "a3")),
            registry.upload_plugin(&b, upload("one", "b1")),
            registry.upload_plugin(&c, upload("one", "c1")),
        );
        let busy = [&x, &y, &z]
            .iter()
            .filter(|r| matches!(r, Err(RegistryError::Busy(m)) if m.contains("uploads are being checked")))
            .count();
        assert_eq!(busy, 1, "{x:?} {y:?} {z:?}");

        // The quota counts every stored version: a third is refused, and
        // stores nothing.
        let mut stored = store.list_plugins(&a).await.unwrap().len();
        while stored < 2 {
            registry
                .upload_plugin(&a, upload(&format!("more{stored}"), "more"))
                .await
                .unwrap();
            stored += 1;
        }
        let refused = registry.upload_plugin(&a, upload("over", "over")).await;
        assert!(
            matches!(&refused, Err(RegistryError::Quota(m)) if m.contains("quota")),
            "{refused:?}"
        );
        assert_eq!(store.list_plugins(&a).await.unwrap().len(), 2);
        // Another tenant's quota is its own.
        registry
            .upload_plugin(&b, upload("two", "b2"))
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn loading_a_tenants_plugins_uses_the_manifest_stored_at_upload() {
    for_each_database(|backend| async move {
        let uploader = registry(&backend).await;
        let tenant = new_tenant(uploader.store(), "described").await;
        uploader
            .upload_plugin(&tenant, plugin("order-api", "1", built::ORDER_API))
            .await
            .unwrap();
        let described = uploader.host().tools(&tenant);
        assert_eq!(described.len(), 1);
        assert_ne!(described[0].description, "as stored");

        // Another process loads the version: were describe() run again, the
        // plugin's own description would come back, not the stored one.
        let mut manifest = serde_json::to_value(
            uploader.store().list_plugins(&tenant).await.unwrap()[0]
                .manifest
                .clone()
                .unwrap(),
        )
        .unwrap();
        manifest["description"] = json!("as stored");
        sqlx::query("UPDATE plugins SET manifest = $1 WHERE tenant_id = $2")
            .bind(manifest.to_string())
            .bind(&tenant)
            .execute(uploader.store().db().pool().unwrap())
            .await
            .unwrap();
        let other = registry(&backend).await;
        assert!(other.load_plugins(&tenant).await.unwrap());
        let tools = other.host().tools(&tenant);
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0].description, "as stored");
        assert_eq!(tools[0].input_schema, described[0].input_schema);
    })
    .await;
}
