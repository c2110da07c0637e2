"""The support desk's domain: what a reply may say, how it is checked, and who may ask.

Shared by the planner's support functions, the responder's training data and the
evaluation harness, so the rules that make a reply trustworthy live in one place.
"""

INTENTS = (
    "order_status",
    "track_shipment",
    "cancel_order",
    "refund_request",
    "change_address",
    "general_question",
)
"""Every intent a message can have; the classifier's labels in ``services/classifier``."""

FIELDS = ("order_id", "email", "name", "product", "amount", "date", "address", "reason")
"""The extractor's fields, in output order."""

SENDER_METADATA_KEY = "slmesh/sender"
"""A2A message metadata key for the sender's identity as the channel verified it:
``{"email": "..."}``. A request without it is anonymous."""
