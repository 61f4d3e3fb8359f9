"""The aggregator node's network shell: CoAP, MQTT and HTTP around a node.

The shell knows the node only through `aggregator.net.ports.Node`: it hands every message
it receives to `Node.submit`, publishes what `Node.receipts` yields, and serves
`Node.status` over HTTP.  `aggregator.net.server.NodeServer` runs the three transports in
one event loop; `aggregator.net.twin.TwinNode` is an in-memory node for tests and demos.
See docs/aggregator-net.md.
"""
