"""A condition plugin in Python: the same VIP check as plugins/vip-check.

Takes the transition when the user is flagged VIP in their profile, or has
spent at least `min_spent` (args, default 100).

Build: componentize-py -d ../../../wit -w condition componentize app -o vip_check.wasm
"""

import json

from wit_world import exports
from wit_world.imports.types import Error
from componentize_py_types import Err


class Conditions(exports.Conditions):
    def evaluate(self, args, conversation, event) -> bool:
        try:
            args = json.loads(args) if args else {}
            profile = json.loads(conversation.user_profile)
        except ValueError as e:
            raise Err(Error(code="bad-json", message=str(e)))
        min_spent = args.get("min_spent", 100)
        if not isinstance(min_spent, (int, float)):
            raise Err(Error(code="bad-args", message="min_spent must be a number"))
        return bool(profile.get("vip")) or float(profile.get("spent", 0)) >= min_spent
