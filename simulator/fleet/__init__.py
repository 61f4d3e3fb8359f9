"""A fleet of virtual gateways in one process: `gridledger sim fleet`.

    loadshape   household and commercial load shapes (pure)
    replay      recorded readings from a CSV (pure once loaded)
    faults      the fault SPEC and which device gets what (pure)
    gateway     one gateway's core: schedule, meters, queue, faults (sans-I/O)
    reconcile   every (device, seq) against the signed receipts (pure)
    links       MQTT and CoAP uplinks (the I/O)
    runner      the asyncio shell that drives the cores and counts
    cli         the command

See docs/load.md for how to run it and what it measured.
"""
