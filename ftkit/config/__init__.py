"""Configuration: the schema (defaults), composing with Hydra, the cross-field checks, override parsing."""
