"""HTTP server pieces shared by wirekit's aiohttp apps: problem+json errors and middleware."""
