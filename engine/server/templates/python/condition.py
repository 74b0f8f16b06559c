"""__NAME__: a condition plugin for MCP Engine, in Python.

A flow uses it on a transition:

    { "condition": "plugin", "plugin": "__NAME__", "args": { "slot": "email" }, "target_state": "next" }

This one takes the transition when the slot named in `args.slot` is filled.
Change `evaluate` to decide what your flow needs.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import Error


class Conditions(exports.Conditions):
    def evaluate(self, args, conversation, event) -> bool:
        try:
            args = json.loads(args or "{}")
            slots = json.loads(conversation.slots)
        except ValueError as e:
            raise Err(Error(code="bad-json", message=str(e)))
        slot = args.get("slot")
        if not isinstance(slot, str):
            raise Err(Error(code="bad-args", message="args.slot must name a slot"))
        return slots.get(slot) is not None
