"""__NAME__: a state-type plugin for MCP Engine, in Python: a whole new kind of state.

A flow uses it as a state of type `plugin:__NAME__`:

    "ask": { "type": "plugin:__NAME__", "config": { "question": "Shall I go ahead?" },
             "transitions": [ { "condition": "expression", "expression": "state.outcome == 'yes'", "target_state": "go" },
                              { "condition": "expression", "expression": "state.outcome == 'no'", "target_state": "stop" } ] }

`execute` runs when the state is entered (no event) and for each message
while it waits for input. This one asks a yes-or-no question and waits until
it gets an answer; the outcome is `yes` or `no`.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.types import Effects, Error, StateOutput, StateTypeManifest


def output(messages, outcome=None):
    """Waits for more input until there is an outcome."""
    return StateOutput(
        effects=Effects(updates="{}", messages=messages),
        outcome=outcome,
        wait_for_input=outcome is None,
    )


class StateTypes(exports.StateTypes):
    def describe(self) -> StateTypeManifest:
        return StateTypeManifest(
            name="__NAME__",
            description="Asks a yes-or-no question and waits for the answer.",
            config_schema=json.dumps({
                "type": "object",
                "required": ["question"],
                "properties": {"question": {"type": "string"}},
            }),
        )

    def execute(self, config, conversation, event) -> StateOutput:
        try:
            config = json.loads(config)
        except ValueError as e:
            raise Err(Error(code="bad-config", message=str(e)))
        question = config.get("question", "Yes or no?")
        if event is None:
            return output([question])
        answer = event.text.strip().lower()
        if answer in ("yes", "y", "sure", "ok"):
            return output([], "yes")
        if answer in ("no", "n", "nope"):
            return output([], "no")
        return output([f"Please answer yes or no. {question}"])
