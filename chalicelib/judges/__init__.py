"""Pure judging layer shared by both runners: catalog, prompts, output schemas, verdict parsing, aggregation."""
