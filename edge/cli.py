"""`gridledger edge ...`: the gateway's commands.

Signing and inspection live here; meter commands (scan, read) come from
`edge.meters.cli`, agent commands from their own modules, each adding to the same group.
"""

from __future__ import annotations

import importlib

from gridledger.output import SubParsers, command_group

# Modules that add commands to the `edge` group through `add_commands(subparsers)`.
COMMAND_MODULES: tuple[str, ...] = ("edge.signing_cli", "edge.meters.cli", "edge.agent.cli")




def register(sub: SubParsers, name: str, help_text: str) -> None:
    commands = command_group(sub, name, help_text)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.add_commands(commands)
