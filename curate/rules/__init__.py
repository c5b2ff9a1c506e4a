"""Built-in rules, one module per family. Every module here is imported by
`curate.engine.rule.load_builtin_rules`, so a new family needs no registration."""
