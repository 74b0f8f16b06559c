import json
import unittest

from wit_world.imports.types import Conversation

from app import Actions


__CONVERSATION__

class ActionTest(unittest.TestCase):
    def test_greets_the_user_by_name_and_remembers_it(self):
        effects = Actions().run('{"greeting": "Welcome back"}', conversation(user_profile='{"name": "Ada"}'), None)
        self.assertEqual(effects.messages, ["Welcome back, Ada!"])
        self.assertEqual(json.loads(effects.updates), {"greeted": True})

    def test_a_stranger_is_greeted_too(self):
        self.assertEqual(Actions().run("{}", conversation(), None).messages, ["Hello, there!"])


if __name__ == "__main__":
    unittest.main()
