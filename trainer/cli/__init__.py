"""`python -m trainer`: main (the parser, flags generated from the spec, the run commands), analyze,
reproduce (their commands), display (progress, tables, the shared usage error)."""
