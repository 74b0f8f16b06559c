"""__NAME__: an intent classifier plugin for MCP Engine, in Python.

A flow's intent state names it as its classifier:

    "route": { "type": "intent", "config": { "classifier": "__NAME__", "confidence_threshold": 0.6 },
               "transitions": [ { "condition": "intent_match", "condition_value": "greeting", "target_state": "hello" } ] }

`classify` scores the user's text against intents; the engine routes on the
best score above the state's threshold. This one matches keywords; put your
model or rules here.
"""

import re

from wit_world import exports
from wit_world.imports.types import IntentScore

KEYWORDS = {
    "greeting": ["hello", "hi", "hey"],
    "goodbye": ["bye", "goodbye", "see you"],
}


class Intents(exports.Intents):
    def classify(self, text, conversation) -> list[IntentScore]:
        text = text.lower()
        words = set(re.findall(r"\w+", text))
        scores = []
        for intent, keywords in KEYWORDS.items():
            hits = sum(1 for k in keywords if k in words or (" " in k and k in text))
            if hits:
                scores.append(IntentScore(intent=intent, confidence=min(0.6 + 0.2 * hits, 0.99)))
        return scores
