"""Bolna webhooks: the inbox deliveries are stored in first, its processor, who may send, and the
tally of deliveries by outcome."""
