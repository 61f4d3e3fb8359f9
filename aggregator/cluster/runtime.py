"""Assemble a ClusterNode (engine, links, identity) from an opened node directory."""

from __future__ import annotations

from aggregator import node as node_mod
from aggregator.consensus.engine import BftEngine
from aggregator.net.server import host_port
from edge import crypto

from .links import Links
from .node import ClusterNode
from .wire import LinkIdentity


def is_cluster(opened: node_mod.Node) -> bool:
    return isinstance(opened.engine, BftEngine)


def cluster_node(opened: node_mod.Node, peer_listen: str | None = None) -> ClusterNode:
    """The validator `opened` is, linked to the others of its genesis.  It listens on
    its genesis peer address unless `peer_listen` (HOST:PORT) says otherwise (a node
    behind a proxy advertises the proxy's address)."""
    engine = opened.engine
    assert isinstance(engine, BftEngine)
    genesis = opened.genesis
    me = LinkIdentity(genesis.chain_id, genesis.hash(), opened.node_id, engine.signer.sign,
                      crypto.verify, genesis.node_keys())
    listen = host_port(peer_listen or genesis.validator(opened.node_id).peer)
    peers = {v.node_id: host_port(v.peer) for v in genesis.validators
             if v.node_id != opened.node_id}
    return ClusterNode(engine, lambda node: Links(me, listen, peers, node.on_peer))
