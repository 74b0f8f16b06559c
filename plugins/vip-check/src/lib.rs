//! A condition plugin: takes the transition when the user is a VIP, either
//! flagged in their profile or having spent at least `min_spent` (args).
//!
//! ```json
//! { "condition": "plugin", "plugin": "vip-check", "args": { "min_spent": 500 }, "target_state": "vip" }
//! ```

wit_bindgen::generate!({ path: "../../wit", world: "condition" });

use exports::mcp::plugin::conditions::Guest;
use mcp::plugin::types::{Conversation, Error, Event};
use serde_json::Value;

struct VipCheck;

impl Guest for VipCheck {
    fn evaluate(
        args: String,
        conversation: Conversation,
        _event: Option<Event>,
    ) -> Result<bool, Error> {
        let args: Value = parse("args", &args)?;
        let profile: Value = parse("user-profile", &conversation.user_profile)?;
        let min_spent = match args.get("min_spent") {
            None => 100.0,
            Some(v) => v.as_f64().ok_or_else(|| Error {
                code: "bad-args".into(),
                message: "min_spent must be a number".into(),
            })?,
        };
        let flagged = profile.get("vip").and_then(Value::as_bool).unwrap_or(false);
        let spent = profile.get("spent").and_then(Value::as_f64).unwrap_or(0.0);
        Ok(flagged || spent >= min_spent)
    }
}

fn parse(what: &str, json: &str) -> Result<Value, Error> {
    serde_json::from_str(json).map_err(|e| Error {
        code: "bad-json".into(),
        message: format!("{what} is not JSON: {e}"),
    })
}

export!(VipCheck);
