"""Twilio plumbing shared by the messaging and voice channels: the signature check every webhook passes,
status-callback dedupe, and the REST client."""
