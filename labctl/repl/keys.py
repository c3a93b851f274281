"""Key bindings: Tab completes at once, even when it arrives with the keys before it.

prompt_toolkit computes completions in the background and runs one computation at a
time; a Tab that arrives while the completion started by typing is still running is
dropped (typed fast, or pasted: ``spa<Tab>``). Our completer only reads a cache, so Tab
computes the completions there and then: one candidate is inserted, several insert their
common part or open the menu; with the menu open, Tab goes to the next entry.
"""

from __future__ import annotations

from prompt_toolkit.completion import CompleteEvent, get_common_complete_suffix
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent


def tab(event: KeyPressEvent) -> None:
    buffer = event.current_buffer
    if buffer.complete_state is not None and buffer.complete_state.completions:
        buffer.complete_next()
        return
    if buffer.completer is None:
        return
    document = buffer.document
    found = list(
        buffer.completer.get_completions(document, CompleteEvent(completion_requested=True))
    )
    if len(found) == 1:
        buffer.apply_completion(found[0])
    elif found:
        common = get_common_complete_suffix(document, found)
        if common:
            buffer.insert_text(common)
        else:
            buffer.start_completion(select_first=False)


def key_bindings() -> KeyBindings:
    bindings = KeyBindings()
    bindings.add("tab")(tab)
    return bindings
