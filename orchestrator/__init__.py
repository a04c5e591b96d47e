"""Legacy context-scoped profiles -> unified Profile + ContextIntent, as a dbt project with a gated promote."""

__version__ = "0.1.0"
