"""The demo and the SMTP sink it sends to: tools for trying the newsletter on one machine.

Kept out of the core package, and this file kept empty, so that starting the sink
(``python -m newsletter.demo.sink``) loads only the sink, not the sending code.
"""
