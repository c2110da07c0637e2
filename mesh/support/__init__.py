"""The support desk's domain: what a reply may say, how it is checked, and who may ask.

Shared by the planner's support functions, the responder's training data and the
evaluation harness, so the rules that make a reply trustworthy live in one place.
"""

SENDER_METADATA_KEY = "slmesh/sender"
"""A2A message metadata key for the sender's identity as the channel verified it:
``{"email": "..."}``. A request without it is anonymous."""
