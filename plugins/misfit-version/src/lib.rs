//! A condition for mcp:plugin@0.2.0, which this engine does not speak: the
//! upload must be refused, naming the version.

wit_bindgen::generate!({ path: "wit", world: "mcp:plugin/condition@0.2.0" });

struct Future;

impl exports::mcp::plugin::conditions::Guest for Future {
    fn evaluate(args: String) -> bool {
        args.is_empty()
    }
}

export!(Future);
