//! What one plugin call may use. Defaults per world; a tenant's settings
//! may override any of them.

use std::time::Duration;

use mcp_flow::{LimitOverrides, PluginWorld};
use serde::{Deserialize, Serialize};

/// The limits of one call.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Wasm instructions (wasmtime fuel): a deterministic budget.
    pub fuel: u64,
    /// Wall-clock time, enforced by epoch interruption and a timer.
    #[serde(with = "millis")]
    pub deadline: Duration,
    /// Linear memory, summed over the component's memories.
    pub memory_bytes: usize,
    /// Elements of any one table.
    pub table_elements: usize,
    /// Bytes of JSON and text a call may return.
    pub result_bytes: usize,
}

const MIB: usize = 1 << 20;
const KIB: usize = 1 << 10;

impl Limits {
    /// The defaults for a world, as wit/README.md lists them.
    pub fn for_world(world: PluginWorld) -> Limits {
        let base = Limits {
            fuel: 500_000_000,
            deadline: Duration::from_secs(1),
            memory_bytes: 64 * MIB,
            table_elements: 100_000,
            result_bytes: 64 * KIB,
        };
        match world {
            PluginWorld::Condition => base,
            PluginWorld::Action => Limits {
                result_bytes: 256 * KIB,
                ..base
            },
            PluginWorld::Tool => Limits {
                fuel: 2_000_000_000,
                deadline: Duration::from_secs(10),
                memory_bytes: 128 * MIB,
                result_bytes: MIB,
                ..base
            },
            PluginWorld::StateType => Limits {
                fuel: 1_000_000_000,
                deadline: Duration::from_secs(2),
                result_bytes: 256 * KIB,
                ..base
            },
            PluginWorld::Intent => Limits {
                fuel: 1_000_000_000,
                deadline: Duration::from_secs(2),
                memory_bytes: 128 * MIB,
                ..base
            },
        }
    }
}

impl Limits {
    /// These limits with a tenant's overrides applied.
    pub fn with(self, overrides: &LimitOverrides) -> Limits {
        Limits {
            fuel: overrides.fuel.unwrap_or(self.fuel),
            deadline: overrides
                .deadline_ms
                .map_or(self.deadline, Duration::from_millis),
            memory_bytes: overrides.memory_bytes.unwrap_or(self.memory_bytes),
            table_elements: overrides.table_elements.unwrap_or(self.table_elements),
            result_bytes: overrides.result_bytes.unwrap_or(self.result_bytes),
        }
    }
}

/// The largest memory any call may be given: the pooling allocator
/// reserves this much address space per memory slot.
pub const MAX_MEMORY_BYTES: usize = 256 * MIB;

/// The wasm stack of every call (an engine-wide setting in wasmtime).
pub const MAX_WASM_STACK: usize = MIB;

/// The most fuel a tenant's override may grant one call.
pub const MAX_FUEL: u64 = 20_000_000_000;
/// The longest deadline a tenant's override may grant one call.
pub const MAX_DEADLINE_MS: u64 = 60_000;
/// The largest result a tenant's override may allow.
pub const MAX_RESULT_BYTES: usize = 16 * MIB;
/// The most table elements a tenant's override may allow (the pool's slots
/// hold this many).
pub const MAX_TABLE_ELEMENTS: usize = 200_000;

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
