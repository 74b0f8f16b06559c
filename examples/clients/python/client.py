"""A chat service talking to MCP Engine from Python, with grpcio.

Generate the client code from proto/ once (it lands beside this file):

    pip install grpcio grpcio-tools
    python -m grpc_tools.protoc -I ../../../proto --python_out=. --grpc_python_out=. \
        common.proto mcp_engine.proto

Then send messages of one conversation and print the replies:

    export MCP_API_KEY=<the tenant's key>
    python client.py --tenant demo "hi" "I'd like to order a pizza"

Replies list the quick replies they offer as [1] [2] ...; a message "#2"
taps the second one of the previous reply: it sends the reply's title as
text and its payload, as a chat widget does.
"""

import argparse
import os
import sys
import uuid

import grpc

import common_pb2
import mcp_engine_pb2
import mcp_engine_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="host:port of the engine")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--conversation", default=f"py-{uuid.uuid4().hex[:12]}")
    parser.add_argument("messages", nargs="+")
    args = parser.parse_args()
    key = os.environ.get("MCP_API_KEY")
    if not key:
        print("set MCP_API_KEY to the tenant's API key", file=sys.stderr)
        return 2

    with grpc.insecure_channel(args.server) as channel:
        engine = mcp_engine_pb2_grpc.MCPEngineStub(channel)
        offered = []
        for text in args.messages:
            content = mcp_engine_pb2.MessageContent(text=text)
            if text.startswith("#") and text[1:].isdigit():
                n = int(text[1:])
                if not 1 <= n <= len(offered):
                    print(f"no quick reply {text} to tap", file=sys.stderr)
                    return 2
                tapped = offered[n - 1]
                content = mcp_engine_pb2.MessageContent(
                    type=common_pb2.MESSAGE_TYPE_QUICK_REPLY,
                    text=tapped.title,
                    payload=tapped.payload,
                    quick_replies=[
                        mcp_engine_pb2.QuickReply(
                            title=tapped.title, payload=tapped.payload, clicked=True
                        )
                    ],
                )
            request = mcp_engine_pb2.ProcessMessageRequest(
                tenant_context=common_pb2.TenantContext(tenant_id=args.tenant),
                conversation_id=args.conversation,
                user_id="python-example",
                content=content,
            )
            try:
                # Every call carries the tenant's key, and a deadline.
                response = engine.ProcessMessage(
                    request, metadata=[("authorization", f"Bearer {key}")], timeout=10
                )
            except grpc.RpcError as e:
                print(f"{e.code().name}: {e.details()}", file=sys.stderr)
                return 1
            print(f"you: {content.text}" + (f" (tapped {content.payload})" if content.payload else ""))
            print("bot: " + response.response.text.replace("\n", "\n     "))
            offered = list(response.response.quick_replies)
            if offered:
                print("     " + "  ".join(f"[{i}] {q.title}" for i, q in enumerate(offered, 1)))
            print(f"     [state {response.current_state}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
