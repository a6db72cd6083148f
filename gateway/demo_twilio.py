"""The demo Twilio account `make run` (DEMO_TWILIO=1) and the simulators share: published values, so a gateway
signing with them only listens on loopback (gateway/cli.py)."""

DEMO_AUTH_TOKEN = "demo-twilio-auth-token-0123456789"  # noqa: S105 - a fixed demo value, documented
DEMO_ACCOUNT_SID = "AC" + "0" * 32
DEMO_SMS_FROM = "+15550100000"
DEMO_WHATSAPP_FROM = "+15550100001"
DEMO_VOICE_FROM = "+15550100002"
DEMO_API_PORT = 8089
