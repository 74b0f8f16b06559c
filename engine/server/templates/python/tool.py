"""__NAME__: a tool (integration) plugin for MCP Engine, in Python.

A flow calls it from an integration state:

    "quote": { "type": "integration",
               "config": { "integration_id": "__NAME__", "request_mapping": { "distance_km": "slots.distance" },
                           "response_mapping": { "fee": "result.fee" } },
               "transitions": [ { "condition": "integration_success", "target_state": "tell_fee" } ] }

`describe` is what tool discovery lists (ListTools); `call` gets the mapped
request as JSON and returns JSON. This one prices a delivery by distance.
A tool may call the tenant's HTTP APIs (hosts on its allow-list only)
through wasi:http, whose bindings are `wit_world.imports.outgoing_handler`;
in this world the plugin types are `wit_world.imports.mcp_plugin_types`,
beside wasi:http's own `types`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.mcp_plugin_types import Error, RateLimit, ToolManifest


class Tools(exports.Tools):
    def describe(self) -> ToolManifest:
        return ToolManifest(
            name="__NAME__",
            description="Prices a delivery by distance.",
            input_schema=json.dumps({
                "type": "object",
                "required": ["distance_km"],
                "properties": {"distance_km": {"type": "number", "minimum": 0}},
            }),
            output_schema=json.dumps({"type": "object", "properties": {"fee": {"type": "number"}}}),
            permissions=[],
            rate_limit=RateLimit(requests=100, per_seconds=1),
        )

    def call(self, args, conversation) -> str:
        try:
            args = json.loads(args)
        except ValueError as e:
            raise Err(Error(code="bad-json", message=str(e)))
        distance = args.get("distance_km")
        if not isinstance(distance, (int, float)) or distance < 0:
            raise Err(Error(code="bad-args", message="distance_km must be a number, 0 or more"))
        return json.dumps({"fee": round(2.0 + 0.5 * distance, 2)})
