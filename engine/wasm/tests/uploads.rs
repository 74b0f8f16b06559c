//! What an upload must be, and compiled code cached by content.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{HOST, bytes};
use mcp_example_plugins as built;
use mcp_flow::PluginWorld;
use mcp_wasm::{CacheStatus, DirArtifactStore, HostConfig, PluginHost, UploadError};

#[tokio::test(flavor = "multi_thread")]
async fn a_non_component_is_refused_with_the_reason() {
    assert_eq!(
        HOST.inspect(b"hello").await.err(),
        Some(UploadError::NotWasm)
    );
    // The smallest core module: magic and version 1.
    let core = [0, b'a', b's', b'm', 1, 0, 0, 0];
    assert_eq!(
        HOST.inspect(&core).await.err(),
        Some(UploadError::NotAComponent)
    );
    // A component header with garbage after it.
    let mut broken = vec![0, b'a', b's', b'm', 0x0d, 0, 1, 0];
    broken.extend_from_slice(&[0xff; 16]);
    assert!(matches!(
        HOST.inspect(&broken).await,
        Err(UploadError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_plugin_is_refused_before_compiling() {
    let host = PluginHost::new(HostConfig {
        max_component_bytes: 50_000,
        pooling: false,
        ..HostConfig::default()
    })
    .unwrap();
    let vip = bytes(built::VIP_CHECK);
    assert_eq!(
        host.inspect(&vip).await.err(),
        Some(UploadError::TooLarge {
            size: vip.len(),
            limit: 50_000
        })
    );
    assert!(!host.is_compiled(&vip));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_world_is_read_from_the_exports_and_must_match_the_claim() {
    for (path, world) in [
        (built::VIP_CHECK, PluginWorld::Condition),
        (built::PRICE, PluginWorld::Action),
        (built::ORDER_API, PluginWorld::Tool),
        (built::QUIZ, PluginWorld::StateType),
        (built::KEYWORD_INTENTS, PluginWorld::Intent),
    ] {
        assert_eq!(
            HOST.inspect(&bytes(path)).await.unwrap().world,
            world,
            "{path}"
        );
    }
    let error = HOST
        .install(
            "t-up",
            "price",
            "1",
            &bytes(built::PRICE),
            Some(PluginWorld::Condition),
            BTreeMap::new(),
        )
        .await
        .err();
    assert_eq!(
        error,
        Some(UploadError::WrongWorld {
            expected: PluginWorld::Condition,
            found: PluginWorld::Action
        })
    );
    assert!(
        HOST.resolve("t-up", "price").is_none(),
        "nothing was installed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_names_are_checked() {
    let error = HOST
        .install(
            "t-up",
            "Bad Name",
            "1",
            &bytes(built::PRICE),
            None,
            BTreeMap::new(),
        )
        .await
        .err();
    assert_eq!(error, Some(UploadError::BadName("Bad Name".into())));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_bytes_are_compiled_once_per_process_and_once_per_store() {
    let dir = std::env::temp_dir().join(format!("mcp-artifacts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = || HostConfig {
        pooling: false,
        artifacts: Some(Arc::new(DirArtifactStore::new(&dir))),
        ..HostConfig::default()
    };
    let quiz = bytes(built::QUIZ);

    let first = PluginHost::new(config()).unwrap();
    assert_eq!(
        first.inspect(&quiz).await.unwrap().cache,
        CacheStatus::Compiled
    );
    assert_eq!(
        first.inspect(&quiz).await.unwrap().cache,
        CacheStatus::Memory
    );

    // A second process (a new host) loads the stored artifact instead.
    let second = PluginHost::new(config()).unwrap();
    let loaded = second.inspect(&quiz).await.unwrap();
    assert_eq!(loaded.cache, CacheStatus::Stored);
    let artifact = dir
        .join(second.engine_hash())
        .join(format!("{}.cwasm", loaded.sha256));
    assert!(artifact.exists(), "{}", artifact.display());

    // A corrupt artifact is ignored and the component compiled again.
    std::fs::write(&artifact, b"garbage").unwrap();
    let third = PluginHost::new(config()).unwrap();
    assert_eq!(
        third.inspect(&quiz).await.unwrap().cache,
        CacheStatus::Compiled
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn uninstalling_stops_resolution() {
    HOST.install(
        "t-un",
        "quiz",
        "1",
        &bytes(built::QUIZ),
        None,
        BTreeMap::new(),
    )
    .await
    .unwrap();
    assert!(HOST.resolve("t-un", "quiz").is_some());
    assert!(HOST.uninstall("t-un", "quiz"));
    assert!(HOST.resolve("t-un", "quiz").is_none());
    assert!(!HOST.uninstall("t-un", "quiz"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_importing_what_the_host_lacks_is_refused_naming_the_import() {
    match HOST.inspect(&bytes(built::MISFIT_IMPORT)).await {
        Err(UploadError::UnsupportedImport(message)) => {
            assert!(message.contains("acme:spy/keylogger@0.1.0"), "{message}")
        }
        other => panic!(
            "expected UnsupportedImport, got {:?}",
            other.map(|i| i.world)
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_for_another_contract_version_is_refused_naming_the_version() {
    assert_eq!(
        HOST.inspect(&bytes(built::MISFIT_VERSION)).await.err(),
        Some(UploadError::UnsupportedVersion {
            found: "mcp:plugin/conditions@0.2.0".into()
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_coexist_and_pinned_calls_reach_their_own() {
    use mcp_flow::{PluginCall, PluginError, PluginRuntime};
    use serde_json::json;

    let (tenant, name) = ("t-versions", "lookup");
    HOST.install(
        tenant,
        name,
        "1",
        &bytes(built::ORDER_API),
        None,
        BTreeMap::new(),
    )
    .await
    .unwrap();
    HOST.install(
        tenant,
        name,
        "2",
        &bytes(built::HOSTILE),
        None,
        BTreeMap::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        HOST.install(
            tenant,
            name,
            "1",
            &bytes(built::HOSTILE),
            None,
            BTreeMap::new()
        )
        .await
        .err(),
        Some(UploadError::VersionExists("1".into()))
    );

    let c = common::conversation(tenant);
    let args = json!({ "mode": "ok", "order_id": "AB1234" });
    let call = |version| PluginCall {
        tenant_id: tenant,
        plugin: name,
        version,
        args: &args,
        conversation: &c,
        event: None,
        timeout: std::time::Duration::from_secs(5),
    };
    let v1_answer = PluginError::Failed {
        plugin: name.into(),
        message: "config: base_url is not configured".into(),
    };
    assert_eq!(
        HOST.call_tool(call(None)).await.unwrap(),
        json!({ "fine": true }),
        "the latest is active"
    );
    assert_eq!(
        HOST.call_tool(call(Some("1"))).await.unwrap_err(),
        v1_answer,
        "pinned to 1"
    );
    assert_eq!(
        HOST.call_tool(call(Some("3"))).await.unwrap_err(),
        PluginError::NotFound {
            plugin: "lookup@3".into()
        }
    );

    assert!(HOST.activate(tenant, name, "1"));
    assert_eq!(HOST.call_tool(call(None)).await.unwrap_err(), v1_answer);
    assert!(HOST.remove_version(tenant, name, "1"));
    assert_eq!(
        HOST.resolve(tenant, name).unwrap().version,
        "2",
        "the remaining version takes over"
    );
    assert!(!HOST.activate(tenant, name, "1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_code_is_kept_up_to_its_bytes_least_recently_used_out() {
    let plugins = [built::VIP_CHECK, built::PRICE, built::KEYWORD_INTENTS].map(bytes);
    // Each one's compiled size, measured by a cache with room for all.
    let roomy = PluginHost::new(HostConfig {
        pooling: false,
        ..HostConfig::default()
    })
    .unwrap();
    let mut sizes = Vec::new();
    for plugin in &plugins {
        let before = roomy.compiled_cache_usage().1;
        roomy.inspect(plugin).await.unwrap();
        sizes.push(roomy.compiled_cache_usage().1 - before);
    }
    assert!(sizes.iter().all(|&size| size > 0), "{sizes:?}");

    // Room for any two of the three, not for all three.
    let mut sorted = sizes.clone();
    sorted.sort();
    let capacity = sorted[1] + sorted[2];
    assert!(capacity < sizes.iter().sum::<usize>());
    let host = PluginHost::new(HostConfig {
        pooling: false,
        compiled_cache_bytes: capacity,
        ..HostConfig::default()
    })
    .unwrap();
    let [vip, price, intents] = &plugins;
    host.inspect(vip).await.unwrap();
    host.inspect(price).await.unwrap();
    // Using vip makes price the least recently used.
    assert_eq!(host.inspect(vip).await.unwrap().cache, CacheStatus::Memory);
    host.inspect(intents).await.unwrap();
    assert!(host.is_compiled(vip));
    assert!(host.is_compiled(intents));
    assert!(!host.is_compiled(price), "the least recently used went");
    let (held, bytes_held) = host.compiled_cache_usage();
    assert_eq!(held, 2);
    assert!(bytes_held <= capacity, "{bytes_held} > {capacity}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_install_refused_after_compiling_keeps_nothing() {
    let host = PluginHost::new(HostConfig {
        pooling: false,
        ..HostConfig::default()
    })
    .unwrap();
    let price = bytes(built::PRICE);
    let refused = host
        .install(
            "t-refused",
            "price",
            "1",
            &price,
            Some(PluginWorld::Tool),
            BTreeMap::new(),
        )
        .await;
    assert!(matches!(refused, Err(UploadError::WrongWorld { .. })));
    assert!(!host.is_compiled(&price));
    assert_eq!(host.compiled_cache_usage(), (0, 0));
    // The same bytes, rightly claimed, are kept.
    host.install("t-refused", "price", "1", &price, None, BTreeMap::new())
        .await
        .unwrap();
    assert!(host.is_compiled(&price));
}
