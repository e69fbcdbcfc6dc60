"""The ``optc`` command line: one module per subcommand, each a thin call into the API."""
