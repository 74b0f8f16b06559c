import unittest

from wit_world.imports.types import Conversation, Event, EventKind

from app import StateTypes

CONFIG = '{"question": "Shall I go ahead?"}'


__CONVERSATION__

def message(text):
    return Event(kind=EventKind.MESSAGE, text=text, data="{}")


class StateTypeTest(unittest.TestCase):
    def test_asks_on_entry_and_waits(self):
        entered = StateTypes().execute(CONFIG, conversation(), None)
        self.assertEqual(entered.effects.messages, ["Shall I go ahead?"])
        self.assertTrue(entered.wait_for_input)

    def test_an_answer_is_the_outcome(self):
        yes = StateTypes().execute(CONFIG, conversation(), message("Yes"))
        self.assertEqual(yes.outcome, "yes")
        self.assertFalse(yes.wait_for_input)
        unclear = StateTypes().execute(CONFIG, conversation(), message("maybe"))
        self.assertIsNone(unclear.outcome)
        self.assertEqual(unclear.effects.messages, ["Please answer yes or no. Shall I go ahead?"])


if __name__ == "__main__":
    unittest.main()
