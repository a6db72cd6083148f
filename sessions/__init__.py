"""Session model and Redis store: customers, conversations, transcripts, events. Imports nothing of ours."""
