//! An action plugin: prices a pizza order from the `size` and `quantity`
//! slots into the `total` variable, with an optional `discount` (0..1).
//!
//! ```json
//! { "type": "plugin", "plugin": "price", "args": { "prices": { "small": 8, "large": 12.5 }, "discount": 0.1 } }
//! ```

wit_bindgen::generate!({ path: "../../wit", world: "action" });

use exports::mcp::plugin::actions::Guest;
use mcp::plugin::host::{Level, log};
use mcp::plugin::types::{Conversation, Effects, Error, Event};
use serde_json::{Value, json};

struct Price;

impl Guest for Price {
    fn run(
        args: String,
        conversation: Conversation,
        _event: Option<Event>,
    ) -> Result<Effects, Error> {
        let args: Value = serde_json::from_str(&args).unwrap_or(Value::Null);
        let slots: Value =
            serde_json::from_str(&conversation.slots).map_err(|e| bad(e.to_string()))?;
        let size = slots["size"]
            .as_str()
            .ok_or_else(|| bad("the size slot is not filled".into()))?;
        let quantity = slots["quantity"].as_f64().unwrap_or(1.0);
        let default_prices = json!({ "small": 8.0, "medium": 10.0, "large": 12.5 });
        let prices = args.get("prices").unwrap_or(&default_prices);
        let unit = prices[size]
            .as_f64()
            .ok_or_else(|| bad(format!("no price for size {size}")))?;
        let discount = args["discount"].as_f64().unwrap_or(0.0).clamp(0.0, 1.0);
        let total = (unit * quantity * (1.0 - discount) * 100.0).round() / 100.0;
        log(
            Level::Debug,
            &format!("priced {quantity} x {size} at {total}"),
        );
        Ok(Effects {
            updates: json!({ "total": total }).to_string(),
            messages: vec![format!("That comes to ${total:.2}.")],
        })
    }
}

fn bad(message: String) -> Error {
    Error {
        code: "bad-order".into(),
        message,
    }
}

export!(Price);
