import unittest

from wit_world.imports.types import Conversation

from app import Intents


__CONVERSATION__

class IntentTest(unittest.TestCase):
    def test_scores_the_intents_it_recognises(self):
        scores = Intents().classify("Hello there!", conversation())
        self.assertEqual([s.intent for s in scores], ["greeting"])
        self.assertGreaterEqual(scores[0].confidence, 0.6)

    def test_knows_nothing_of_other_texts(self):
        self.assertEqual(Intents().classify("what's the weather", conversation()), [])


if __name__ == "__main__":
    unittest.main()
