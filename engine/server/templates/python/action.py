"""__NAME__: an action plugin for MCP Engine, in Python.

A flow runs it as an entry, exit or transition action:

    { "type": "plugin", "plugin": "__NAME__", "args": { "greeting": "Welcome back" } }

This one greets the user by the name in their profile and remembers it did
(`variables.greeted`). An action returns updates (variables; keys
`slots.<name>` set slots; null removes one) and messages for the user.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import Effects, Error


class Actions(exports.Actions):
    def run(self, args, conversation, event) -> Effects:
        try:
            args = json.loads(args or "{}")
            profile = json.loads(conversation.user_profile)
        except ValueError as e:
            raise Err(Error(code="bad-json", message=str(e)))
        greeting = args.get("greeting", "Hello")
        name = profile.get("name", "there")
        return Effects(updates=json.dumps({"greeted": True}), messages=[f"{greeting}, {name}!"])
