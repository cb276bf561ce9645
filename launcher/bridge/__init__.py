"""Anthropic Messages API ⇄ OpenAI chat completions, and pass-through to Anthropic-speaking backends.

`request` translates requests, `stream` translates response streams, `response` folds a stream into
one message; `chat` and `passthrough` talk to backends; `handlers` are the proxy's endpoints.
"""
