"""The interactive REPL of labctl (``labctl`` with no command), on prompt_toolkit.

Only this package imports prompt_toolkit, so one-shot commands never pay for it.
Modules, one concern each (the pgcli shape):

- :mod:`~labctl.repl.loop`: the loop itself, :func:`run`;
- :mod:`~labctl.repl.dispatch`: one line through the same click group as the CLI;
- :mod:`~labctl.repl.session`: the PromptSession (history, suggestions, style);
- :mod:`~labctl.repl.completion`: Tab completion from the group and the cache;
- :mod:`~labctl.repl.keys`: the key bindings (Tab);
- :mod:`~labctl.repl.toolbar`: the prompt and the bottom toolbar, from the cache;
- :mod:`~labctl.repl.poller`: the background thread that fills the cache;
- :mod:`~labctl.repl.cache`: the snapshot they share.
"""

from __future__ import annotations

from labctl.repl.loop import run

__all__ = ["run"]
