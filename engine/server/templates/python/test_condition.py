import unittest

from componentize_py_types import Err
from wit_world.imports.types import Conversation

from app import Conditions


__CONVERSATION__

class ConditionTest(unittest.TestCase):
    def test_takes_the_transition_when_the_slot_is_filled(self):
        args = '{"slot": "email"}'
        filled = conversation(slots='{"email": "ada@example.com"}')
        self.assertTrue(Conditions().evaluate(args, filled, None))
        self.assertFalse(Conditions().evaluate(args, conversation(), None))

    def test_args_without_a_slot_are_an_error(self):
        with self.assertRaises(Err) as raised:
            Conditions().evaluate("{}", conversation(), None)
        self.assertEqual(raised.exception.value.code, "bad-args")


if __name__ == "__main__":
    unittest.main()
