"""The query side of a node: the HTTP routes (`api`), read-side SQL and the reading index
(`ledger`), verifiable receipts (`receipts`, `verify_cli`), and the I/O-free pieces they
are built from: accounts, tokens, access, rate limits, class II and III data, TableJson
and SignJson (docs/query-access.md)."""
