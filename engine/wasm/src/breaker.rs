//! A circuit breaker per (tenant, plugin): after repeated failures, calls
//! fail fast for a while; then one call is let through to probe.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When to open, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Failures in a row that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before letting a probe through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Circuit {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is in flight; everyone else is refused until it reports.
    HalfOpen,
}

/// Breakers for every (tenant, plugin) seen.
#[derive(Debug, Default)]
pub struct Breakers {
    config: BreakerConfig,
    circuits: Mutex<HashMap<(String, String), Circuit>>,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Self {
        Breakers {
            config,
            circuits: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a call may go ahead now; `Err` carries how long until a probe.
    /// The admission records the call's outcome: dropped before it reports
    /// (its caller gave up, a timeout cancelled it), the call counts as failed,
    /// so a hanging plugin opens its circuit and a dropped probe cannot leave
    /// the circuit half-open.
    pub fn admit(&self, tenant: &str, plugin: &str) -> Result<Admission<'_>, Duration> {
        self.admit_unguarded(tenant, plugin)?;
        Ok(Admission {
            breakers: self,
            tenant: tenant.to_owned(),
            plugin: plugin.to_owned(),
            reported: false,
        })
    }

    fn admit_unguarded(&self, tenant: &str, plugin: &str) -> Result<(), Duration> {
        let mut circuits = self.circuits.lock().unwrap();
        let key = (tenant.to_owned(), plugin.to_owned());
        let circuit = circuits
            .entry(key)
            .or_insert(Circuit::Closed { failures: 0 });
        match *circuit {
            Circuit::Closed { .. } => Ok(()),
            Circuit::HalfOpen => Err(self.config.cooldown),
            Circuit::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *circuit = Circuit::HalfOpen;
                    Ok(())
                } else {
                    Err(until - now)
                }
            }
        }
    }

    /// Reports how a call went.
    fn record(&self, tenant: &str, plugin: &str, ok: bool) {
        let mut circuits = self.circuits.lock().unwrap();
        let key = (tenant.to_owned(), plugin.to_owned());
        let circuit = circuits
            .entry(key)
            .or_insert(Circuit::Closed { failures: 0 });
        *circuit = match (*circuit, ok) {
            (_, true) => Circuit::Closed { failures: 0 },
            (Circuit::Closed { failures }, false)
                if failures + 1 < self.config.failure_threshold =>
            {
                Circuit::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => {
                tracing::warn!(tenant, plugin, cooldown = ?self.config.cooldown, "circuit opened");
                Circuit::Open {
                    until: Instant::now() + self.config.cooldown,
                }
            }
        };
    }
}

/// An admitted call, until it reports how it went.
#[must_use = "an admission dropped without a report counts as a failure"]
pub struct Admission<'b> {
    breakers: &'b Breakers,
    tenant: String,
    plugin: String,
    reported: bool,
}

impl Admission<'_> {
    /// Reports the call's outcome.
    pub fn report(mut self, ok: bool) {
        self.reported = true;
        self.breakers.record(&self.tenant, &self.plugin, ok);
    }

    /// The call never reached the plugin (the engine had no room for it):
    /// no outcome. A probe that did not run makes way for the next one.
    pub fn withdraw(mut self) {
        self.reported = true;
        let mut circuits = self.breakers.circuits.lock().unwrap();
        let key = (self.tenant.clone(), self.plugin.clone());
        if let Some(circuit @ Circuit::HalfOpen) = circuits.get_mut(&key) {
            *circuit = Circuit::Open {
                until: Instant::now(),
            };
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.reported {
            tracing::debug!(tenant = %self.tenant, plugin = %self.plugin, "a call was dropped; counted as failed");
            self.breakers.record(&self.tenant, &self.plugin, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_then_lets_one_probe_through() {
        let breakers = Breakers::new(BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_millis(30),
        });
        for _ in 0..3 {
            breakers.admit("t", "p").unwrap().report(false);
        }
        assert!(breakers.admit("t", "p").is_err(), "open after 3 failures");
        assert!(breakers.admit("t", "other").is_ok(), "per plugin");
        assert!(breakers.admit("u", "p").is_ok(), "per tenant");

        std::thread::sleep(Duration::from_millis(40));
        let probe = breakers.admit("t", "p").expect("the probe");
        assert!(
            breakers.admit("t", "p").is_err(),
            "only one probe at a time"
        );
        probe.report(true);
        assert!(breakers.admit("t", "p").is_ok(), "closed again");
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again() {
        let breakers = Breakers::new(BreakerConfig {
            failure_threshold: 1,
            cooldown: Duration::from_millis(20),
        });
        breakers.admit("t", "p").unwrap().report(false);
        std::thread::sleep(Duration::from_millis(25));
        breakers.admit("t", "p").unwrap().report(false);
        assert!(breakers.admit("t", "p").is_err());
    }

    #[test]
    fn a_dropped_call_counts_as_failed_and_a_dropped_probe_reopens() {
        let breakers = Breakers::new(BreakerConfig {
            failure_threshold: 2,
            cooldown: Duration::from_millis(20),
        });
        drop(breakers.admit("t", "p").unwrap());
        drop(breakers.admit("t", "p").unwrap());
        assert!(
            breakers.admit("t", "p").is_err(),
            "two dropped calls opened it"
        );
        std::thread::sleep(Duration::from_millis(25));
        drop(breakers.admit("t", "p").expect("the probe"));
        assert!(
            breakers.admit("t", "p").is_err(),
            "open again, not stuck half-open"
        );
        std::thread::sleep(Duration::from_millis(25));
        breakers.admit("t", "p").expect("a second probe").withdraw();
        breakers
            .admit("t", "p")
            .expect("a withdrawn probe makes way")
            .report(true);
        assert!(breakers.admit("t", "p").is_ok());
    }

    #[test]
    fn successes_reset_the_count() {
        let breakers = Breakers::new(BreakerConfig {
            failure_threshold: 2,
            cooldown: Duration::from_secs(60),
        });
        breakers.admit("t", "p").unwrap().report(false);
        breakers.admit("t", "p").unwrap().report(true);
        breakers.admit("t", "p").unwrap().report(false);
        assert!(breakers.admit("t", "p").is_ok());
    }
}
