"""Alerts (DESIGN §8). So far the pieces a delivery is made of: the webhook signature
(signing.py) and the bodies of each channel kind (payloads.py). Rules, channels, the outbox
and its worker are not built yet."""
