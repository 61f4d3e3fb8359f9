"""The query side of a node, without I/O to the network: accounts, tokens, access, rate
limits, class II and III data, TableJson and SignJson (docs/query-access.md)."""
