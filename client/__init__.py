"""quart-sse-chat: the terminal chat client (``python -m client``).

Layers, from the wire up: :mod:`client.api` (thin HTTP calls), :mod:`client.stream` (one
answer's events, resumed with ``Last-Event-ID`` when the connection drops),
:mod:`client.answer` (an answer shown live, as Rich Markdown or as plain text; finished
Markdown blocks are cut off by :mod:`client.blocks` and printed once),
:mod:`client.chat` and :mod:`client.commands` (the interactive loop), and
:mod:`client.__main__` (arguments, one-shot ``--message`` mode, exit codes).  Whatever
came from the server, the model or the user is shown through :mod:`client.safe`: as text,
never as Rich markup, with control characters and escape sequences made visible.
"""
