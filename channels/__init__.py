"""Channel adapters: each turns one transport's input into ``InboundMessage`` and delivers replies."""
