"""Twilio plumbing shared by the messaging and voice channels: one REST client, and what both need of it."""
