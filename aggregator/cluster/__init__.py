"""The node runtime of a BFT chain: authenticated links, the cluster node, local clusters.

    wire.py      frames, the link handshake and peer messages (sans-I/O)
    links.py     authenticated TCP links with bounded queues per peer
    node.py      ClusterNode: ports.Node around the BFT engine and its links
    local.py     `gridledger cluster up/status/down`: N node processes on loopback
    cli.py       the command group

docs/consensus.md ("Node runtime") describes the whole.
"""
