//! Rate limits per API key and per tenant, on every context backend: with
//! Redis two processes (two limiters here) draw on one bucket; in process
//! each has its own.

mod common;

use common::{context_backends, tenant_id};
use mcp_store::{Rate, RateLimitSettings, RateLimiter};

/// So slow a refill that no token comes back while the test runs.
fn rate(burst: f64) -> Option<Rate> {
    Some(Rate {
        per_second: 0.001,
        burst,
    })
}

#[tokio::test]
async fn a_keys_burst_is_shared_by_every_process_on_redis() {
    for (backend, context) in context_backends().iter() {
        let settings = RateLimitSettings {
            per_key: rate(4.0),
            per_tenant: None,
        };
        let one = RateLimiter::open(&settings, &context).await.unwrap();
        let two = RateLimiter::open(&settings, &context).await.unwrap();
        let (key, tenant) = (tenant_id("key"), tenant_id("tenant"));
        let shared = context.redis_url.is_some();
        let mut passed = 0;
        for i in 0..10 {
            let limiter = if i % 2 == 0 { &one } else { &two };
            match limiter.check(&key, &tenant).await {
                Ok(()) => passed += 1,
                Err(limited) => {
                    assert_eq!(limited.scope, "API key", "{backend}");
                    assert!(limited.retry_after.as_secs() > 0, "{backend}: {limited}");
                    assert!(limited.to_string().contains("retry in"), "{backend}");
                }
            }
        }
        let expected = if shared { 4 } else { 8 };
        assert_eq!(passed, expected, "{backend}");
        // Another key is not affected.
        assert!(
            one.check(&tenant_id("other"), &tenant).await.is_ok(),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_tenants_keys_share_the_tenants_bucket() {
    for (backend, context) in context_backends().iter() {
        let settings = RateLimitSettings {
            per_key: None,
            per_tenant: rate(2.0),
        };
        let limiter = RateLimiter::open(&settings, &context).await.unwrap();
        let tenant = tenant_id("tenant");
        assert!(limiter.check("k1", &tenant).await.is_ok(), "{backend}");
        assert!(limiter.check("k2", &tenant).await.is_ok(), "{backend}");
        let limited = limiter.check("k3", &tenant).await.unwrap_err();
        assert_eq!(limited.scope, "tenant", "{backend}");
        assert!(
            limiter.check("k1", &tenant_id("another")).await.is_ok(),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn no_limit_set_lets_everything_through() {
    let limiter = RateLimiter::open(
        &RateLimitSettings::default(),
        &common::context_settings(true),
    )
    .await
    .unwrap();
    assert!(limiter.is_off());
}
