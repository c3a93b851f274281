"""labctl: the command-line client of labd, as one-shot commands or a REPL.

Modules, one concept each:

- :mod:`labctl.cli`: the click group, the one grammar of the CLI and the REPL;
- :mod:`labctl.invoke`: one command line through that group (exit codes, one-line errors);
- :mod:`labctl.state`: what a command needs from its invocation (``ctx.obj``);
- :mod:`labctl.target`: where labd is and how to reach it, from options and environment;
- :mod:`labctl.argtypes`: click types for addresses, ``KEY=VALUE`` and set ids;
- :mod:`labctl.client`: one rpyc connection to labd, results decoded from JSON;
- :mod:`labctl.tls`: the client side of mutual TLS;
- :mod:`labctl.autostart`: start labd in the background when nobody answers locally;
- :mod:`labctl.follow`: ``tail -f``;
- :mod:`labctl.watch`: the live ``watch`` view (one-shot and REPL alike);
- :mod:`labctl.render`, :mod:`labctl.table`, :mod:`labctl.humane`: results as text.
- :mod:`labctl.repl`: the interactive REPL, imported only when no command is given; it is
  handed the group and never imports :mod:`labctl.cli`.

One-shot commands import no daemon module but :mod:`labd.protocol` and
:mod:`labd.errors`, and neither prompt_toolkit nor psutil, so that they start fast.
"""

from __future__ import annotations
