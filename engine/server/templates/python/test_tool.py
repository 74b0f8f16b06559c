import json
import unittest

from componentize_py_types import Err
from wit_world.imports.mcp_plugin_types import Conversation

from app import Tools


__CONVERSATION__

class ToolTest(unittest.TestCase):
    def test_prices_a_delivery(self):
        self.assertEqual(json.loads(Tools().call('{"distance_km": 4}', conversation())), {"fee": 4.0})

    def test_refuses_a_negative_distance(self):
        with self.assertRaises(Err) as raised:
            Tools().call('{"distance_km": -1}', conversation())
        self.assertEqual(raised.exception.value.code, "bad-args")

    def test_describes_itself_with_json_schemas(self):
        manifest = Tools().describe()
        self.assertEqual(manifest.name, "__NAME__")
        self.assertEqual(json.loads(manifest.input_schema)["required"], ["distance_km"])


if __name__ == "__main__":
    unittest.main()
