"""`ftkit serve`: one run, or several adapters of one base model, behind an OpenAI-compatible HTTP API.

Modules: server (the command), options (flags), variants (loading and A/B routing), engine (model calls),
batching (dynamic batching), guard (auth, body limit, metrics timing), app (routes and errors), prometheus
(/metrics).
"""
