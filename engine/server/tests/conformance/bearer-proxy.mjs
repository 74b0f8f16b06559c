// The conformance suite cannot send an Authorization header, and /mcp wants
// one: this loopback proxy adds `Bearer $MCP_KEY` to every request and passes
// everything else through untouched (Host and Origin included, which the
// DNS-rebinding scenario depends on; SSE streams as they come).
//
//   MCP_KEY=... node bearer-proxy.mjs TARGET_ORIGIN
//
// Prints the port it listens on, then serves until killed.
import http from "node:http";

const target = new URL(process.argv[2]);
const server = http.createServer((request, response) => {
  const headers = { ...request.headers, authorization: `Bearer ${process.env.MCP_KEY}` };
  const upstream = http.request(
    { hostname: target.hostname, port: target.port, path: request.url, method: request.method, headers },
    (answer) => {
      response.writeHead(answer.statusCode, answer.headers);
      answer.pipe(response);
    },
  );
  upstream.on("error", (error) => {
    response.writeHead(502);
    response.end(String(error));
  });
  request.pipe(upstream);
  response.on("close", () => upstream.destroy());
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
