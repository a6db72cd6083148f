"""Composition root: settings, the aiohttp app, the pipeline, bots, web pages and the CLI."""
