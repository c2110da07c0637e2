"""Synthetic customer messages with their ground truth (intent and extracted fields).

A message is assembled from phrasing templates (opener, self-introduction, the request
itself, extra sentences for each fact, closer, signature) filled with entity values. Each
template list is split by position: every 7th template (offset 3) is held out for
validation and every 7th (offset 6) for test, so the test split reads phrasings that
training never saw. The classifier, extractor and tool-caller data all start here.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from random import Random

from mesh.support import FIELDS, INTENTS
from mesh.train.data.entities import Entities, Split

MAX_MESSAGE_CHARS = 280

# Each core template is one request; its slots name the facts it states itself. ``{ref}``
# is the order reference phrase (an order id, an email, or just "my order").
_CORES: Mapping[str, tuple[str, ...]] = {
    "order_status": (
        "What is the status of {ref}?",
        "Can you tell me what is happening with {ref}?",
        "Could you check on {ref} for me?",
        "I'd like an update on {ref}.",
        "Has {ref} been processed yet?",
        "Is {ref} confirmed?",
        "Please give me the current status of {ref}.",
        "I have not heard anything about {ref} since I placed it.",
        "Can you look up {ref} and tell me where things stand?",
        "Any news on {ref}?",
        "I want to know the status of {ref}.",
        "What's going on with {ref}?",
        "Could you confirm that {ref} went through?",
        "Did {ref} get accepted?",
        "Please check {ref}, I am not sure it was placed correctly.",
        "I would like to see the details of {ref}.",
        "Status of {ref} please.",
        "Can you confirm the amount and product on {ref}?",
        "I need the order details for {ref}.",
        "Was {ref} paid successfully?",
        "Could you pull up {ref}?",
        "Checking in on {ref}, is everything okay with it?",
        "I can't see {ref} in my account, can you check it?",
        "Quick question about the status of {ref}.",
        "Can you list my recent orders? It's about {ref}.",
        "What did I order in {ref}?",
        "Is {ref} still being prepared?",
        "Has anything changed with {ref}?",
        "Can you confirm {ref} is in your system?",
        "I'd like to check the progress of {ref}.",
        "Is {ref} being processed?",
        "What stage is {ref} at?",
        "Please let me know the order status for {ref}.",
        "Can I get a status update on {ref}?",
        "Has the payment for {ref} gone through?",
        "I never got a confirmation email for {ref}, is it placed?",
        "Can you tell me if {ref} is complete?",
        "Please verify the details of {ref}.",
        "Is {ref} still active?",
        "How is {ref} doing? Any update on its status?",
        "Could you look into the status of {ref}?",
        "I want to double-check {ref}.",
    ),
    "track_shipment": (
        "Where is {ref}?",
        "Can I get the tracking number for {ref}?",
        "When will {ref} arrive?",
        "Has {ref} shipped yet?",
        "I'm still waiting for {ref} to be delivered.",
        "Could you track {ref} for me?",
        "What is the delivery date for {ref}?",
        "Which carrier is delivering {ref}?",
        "My tracking link for {ref} does not work, where is the parcel?",
        "{ref} has not arrived yet, where is it?",
        "Is {ref} out for delivery?",
        "How long until {ref} gets here?",
        "Please send me the tracking details for {ref}.",
        "The parcel for {ref} is late, can you track it?",
        "Can you tell me where {ref} is right now?",
        "When can I expect delivery of {ref}?",
        "Has {ref} left the warehouse?",
        "I need to know when {ref} will be delivered.",
        "Tracking for {ref} please.",
        "What's the shipping status of {ref}?",
        "Was {ref} delivered? I can't find the package.",
        "Where is my parcel? It's {ref}.",
        "Can you give me an ETA for {ref}?",
        "Is {ref} on its way?",
        "I'd like to follow the shipment of {ref}.",
        "The courier hasn't come with {ref}, any idea where it is?",
        "Could you check the delivery progress of {ref}?",
        "Has {ref} been handed to the courier?",
        "Can you find out where {ref} is?",
        "The tracking page for {ref} hasn't updated in days.",
        "When does {ref} arrive?",
        "Has {ref} been dispatched?",
        "Could you tell me the tracking code for {ref}?",
        "I haven't received {ref} yet.",
        "Is {ref} going to arrive this week?",
        "Can you locate {ref}? It should have arrived by now.",
        "Please check where {ref} is in transit.",
        "What's the estimated arrival for {ref}?",
        "Who is shipping {ref} and what's the tracking number?",
        "I think {ref} got lost in transit.",
        "Any delivery update for {ref}?",
        "How far away is {ref}?",
    ),
    "cancel_order": (
        "Please cancel {ref}.",
        "I want to cancel {ref}.",
        "Can you cancel {ref}? {reason_sentence}",
        "Cancel {ref} please, {reason}.",
        "I need to cancel {ref} because {reason}.",
        "Could you stop {ref} before it ships?",
        "I'd like to cancel {ref} as {reason}.",
        "Please don't send {ref}, I want to cancel it.",
        "Is it still possible to cancel {ref}?",
        "I changed my plans, please cancel {ref}.",
        "Kindly cancel {ref}.",
        "Cancel {ref}.",
        "I want my order cancelled: {ref}.",
        "Please void {ref}, {reason}.",
        "Can {ref} still be cancelled? {reason_sentence}",
        "I'd like to withdraw {ref}.",
        "Stop {ref} please, I don't want it anymore.",
        "Please cancel {ref} right away because {reason}.",
        "I made a mistake with {ref}, please cancel it.",
        "Could you cancel {ref} for me, {reason}?",
        "I no longer want {ref}, cancel it please.",
        "Please call off {ref}.",
        "I would like to cancel {ref} since {reason}.",
        "Cancellation request for {ref}.",
        "Can you cancel {ref} before it is dispatched?",
        "Please cancel {ref}, thanks. {reason_sentence}",
        "I need {ref} cancelled today.",
        "Please make sure {ref} is cancelled, {reason}.",
        "Please scrap {ref}.",
        "I'd like to cancel {ref}, please confirm.",
        "Can you abort {ref}? {reason_sentence}",
        "Please cancel {ref} immediately, {reason}.",
        "Don't ship {ref}, I want to cancel.",
        "I need to call off {ref} because {reason}.",
        "Cancel {ref} for me please.",
        "I regret ordering, please cancel {ref}.",
        "Please terminate {ref}.",
        "Could {ref} be cancelled before shipping?",
        "I want to cancel {ref}. {reason_sentence}",
        "Please drop {ref}, I'm cancelling it.",
        "Can I still cancel {ref}? I don't need it.",
        "Please stop and cancel {ref}.",
    ),
    "refund_request": (
        "I want a refund for {ref}.",
        "Please refund {amount} for {ref}.",
        "Can I get my money back for {ref}? {reason_sentence}",
        "I'd like a refund of {amount} on {ref} because {reason}.",
        "Please refund {ref}, {reason}.",
        "I returned {ref}, when do I get my refund?",
        "I want to return {ref} and get a refund.",
        "Could you refund {amount} to my card for {ref}?",
        "Requesting a refund for {ref}: {reason}.",
        "I was charged {amount} for {ref} and want it back.",
        "Please give me a refund for {ref} as {reason}.",
        "Refund {amount} on {ref} please.",
        "I need a refund for {ref}, {reason}.",
        "Can you refund {ref}? I paid {amount}.",
        "I would like my {amount} back for {ref}.",
        "Please process a refund of {amount} for {ref}.",
        "Money back for {ref} please.",
        "I'm sending {ref} back, please refund it.",
        "Can I have a partial refund of {amount} for {ref}? {reason_sentence}",
        "I expect a full refund for {ref} since {reason}.",
        "Please reimburse {amount} for {ref}.",
        "Refund request for {ref}, {reason}.",
        "I want {ref} refunded.",
        "How do I get a refund for {ref}? {reason_sentence}",
        "Please credit {amount} back for {ref}.",
        "I'd like to return {ref} for a refund of {amount}.",
        "Refund {ref} please, {reason}.",
        "I want my money back for {ref}.",
        "I'd like my money back for {ref}.",
        "Please issue a refund for {ref}.",
        "Refund me {amount} for {ref}, {reason}.",
        "Can you send back the {amount} I paid for {ref}?",
        "I want to be reimbursed for {ref}.",
        "Please return my money for {ref} as {reason}.",
        "I'd like to request a refund on {ref}.",
        "Could I get refunded for {ref}? {reason_sentence}",
        "Please refund the {amount} charged for {ref}.",
        "I'm owed a refund of {amount} for {ref}.",
        "Give me a refund for {ref} please.",
        "I'm returning {ref}, please refund {amount}.",
        "Can you reverse the charge of {amount} for {ref}?",
        "I want a full refund on {ref}.",
    ),
    "change_address": (
        "Please change the delivery address of {ref} to {address}.",
        "Can you ship {ref} to {address} instead?",
        "I moved, please send {ref} to {address}.",
        "Update the shipping address for {ref}: {address}.",
        "I need to change where {ref} is delivered. New address: {address}.",
        "Could you redirect {ref} to {address}?",
        "Please deliver {ref} to {address} rather than my old address.",
        "Wrong address on {ref}! It should go to {address}.",
        "Change the address on {ref} to {address} please.",
        "Can I update the delivery address for {ref}?",
        "Please use {address} as the shipping address for {ref}.",
        "Ship {ref} to {address}.",
        "I'd like {ref} delivered to {address}.",
        "The address on {ref} is wrong, please correct it to {address}.",
        "Can you change the shipping address on {ref}? New one: {address}.",
        "Please send {ref} to my new address, {address}.",
        "I want to change the address for {ref}.",
        "New delivery address for {ref}: {address}.",
        "Could you update {ref} so it ships to {address}?",
        "Please reroute {ref} to {address}.",
        "I typed the wrong address for {ref}, it is {address}.",
        "Deliver {ref} to {address} please.",
        "Please amend the address of {ref} to {address}.",
        "My address changed, {ref} should go to {address}.",
        "Can {ref} still be sent to a different address? {address}.",
        "Kindly update the shipping address of {ref} to {address}.",
        "Please switch the delivery address for {ref} to {address}.",
        "Redirect {ref} to {address}, thanks.",
        "Please update the address for {ref} to {address}.",
        "Could you change the destination of {ref} to {address}?",
        "I need {ref} shipped to {address} instead of my old address.",
        "Please modify the delivery address of {ref}: {address}.",
        "Send {ref} to {address} please.",
        "Can the address on {ref} be changed to {address}?",
        "I entered an old address for {ref}. Please use {address}.",
        "Please correct the shipping address for {ref}. It should be {address}.",
        "Change delivery for {ref} to {address}.",
        "I need to update where {ref} goes: {address}.",
        "Can you forward {ref} to {address}?",
        "The new shipping address for {ref} is {address}.",
        "Please have {ref} delivered to {address} instead.",
        "I'd like to change the shipping address of {ref}.",
    ),
    "general_question": (
        "What are your opening hours?",
        "Do you ship to {country}?",
        "Do you have the {product} in stock?",
        "How long does shipping to {city} usually take?",
        "What payment methods do you accept?",
        "Can I pay with PayPal?",
        "Do you offer gift wrapping?",
        "What is your return policy in general?",
        "Is there a student discount?",
        "Do you have a shop in {city}?",
        "How much does express delivery cost?",
        "Can I add a gift note to {ref}?",
        "Do you sell gift cards?",
        "Is the {product} available in black?",
        "Which countries do you deliver to?",
        "How do I reset my account password?",
        "Can I get an invoice for {ref}?",
        "Do you have a phone number I can call?",
        "Is the {product} covered by a warranty?",
        "Do you price match?",
        "Are you open on weekends?",
        "Can I change the email address on my account?",
        "Does the {product} come with a manual in German?",
        "How do I subscribe to your newsletter?",
        "Can I combine two discount codes?",
        "Do you deliver to PO boxes?",
        "What size is the {product}?",
        "Is your website safe to pay on?",
        "Do you offer next-day delivery?",
        "What are your shipping costs to {country}?",
        "Is the {product} waterproof?",
        "Do you have a loyalty program?",
        "Can I pick up orders in {city}?",
        "How can I contact a human agent?",
        "Do you accept Apple Pay?",
        "When will the {product} be back in stock?",
        "Do you ship internationally?",
        "How do I use a discount code?",
        "Do you sell refurbished items?",
        "What is the warranty period on electronics?",
        "Are your prices including VAT?",
        "Can I order by phone?",
    ),
}

# Training also writes requests from a lexicon: an action phrase of the intent in a
# first-person frame ("I'd like to" + "call off {ref}"). The same words then appear in
# many sentences, so the held-out literal templates above read as new sentences made of
# known words rather than as unknown words; no lexicon sentence equals a held-out one.
_FRAMES = (
    "I want to {action}.",
    "I'd like to {action}.",
    "I need to {action}.",
    "I would like to {action}.",
    "Can you help me {action}?",
    "Is it possible to {action}?",
    "I'm writing to {action}.",
    "I am trying to {action}.",
    "Could you help me {action}?",
    "I'm hoping to {action}.",
    "How can I {action}?",
    "Can I {action}?",
    "I wish to {action}.",
    "Please help me {action}.",
    "I'm contacting you to {action}.",
    "I just want to {action}.",
)
_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "order_status": (
        "check the status of {ref}",
        "get an update on {ref}",
        "confirm that {ref} went through",
        "know what is happening with {ref}",
        "see the details of {ref}",
        "verify {ref}",
        "find out if {ref} was processed",
        "check whether {ref} was accepted",
        "check if the payment for {ref} went through",
        "double-check {ref}",
        "look up {ref}",
        "know the current status of {ref}",
        "know if {ref} is still active",
        "see my recent orders, starting with {ref}",
        "confirm the amount of {ref}",
        "know if anything changed with {ref}",
        "check the order status of {ref}",
        "know what stage {ref} is at",
    ),
    "track_shipment": (
        "track {ref}",
        "know where {ref} is",
        "find out when {ref} arrives",
        "get the tracking number for {ref}",
        "know when {ref} will be delivered",
        "follow the shipment of {ref}",
        "check the delivery date of {ref}",
        "locate {ref}",
        "see if {ref} has shipped",
        "know if {ref} was dispatched",
        "get an ETA for {ref}",
        "check if {ref} is out for delivery",
        "find {ref}, it has not arrived",
        "know which carrier is delivering {ref}",
        "know how far away {ref} is",
        "check the tracking of {ref}",
        "find out why {ref} is late",
        "know if {ref} is in transit",
    ),
    "cancel_order": (
        "cancel {ref}",
        "call off {ref}",
        "void {ref}",
        "withdraw {ref}",
        "scrap {ref}",
        "terminate {ref}",
        "abort {ref}",
        "stop {ref} before it ships",
        "drop {ref}",
        "cancel {ref} because {reason}",
        "cancel {ref} since {reason}",
        "void {ref} as {reason}",
        "have {ref} cancelled",
        "cancel {ref} before it is dispatched",
        "cancel {ref} right away",
        "undo {ref}",
    ),
    "refund_request": (
        "get a refund for {ref}",
        "get my money back for {ref}",
        "request a refund of {amount} for {ref}",
        "be reimbursed for {ref}",
        "get {amount} back for {ref}",
        "return {ref} for a refund",
        "have {ref} refunded",
        "get a refund for {ref} because {reason}",
        "claim a refund on {ref}",
        "receive a refund of {amount} on {ref}",
        "get {amount} credited back for {ref}",
        "reverse the charge for {ref}",
        "get a partial refund of {amount} for {ref}",
        "be reimbursed {amount} for {ref}",
        "send {ref} back and get refunded",
        "get a full refund on {ref}",
    ),
    "change_address": (
        "change the delivery address of {ref} to {address}",
        "ship {ref} to {address}",
        "redirect {ref} to {address}",
        "update the shipping address for {ref} to {address}",
        "send {ref} to {address} instead",
        "reroute {ref} to {address}",
        "deliver {ref} to {address}",
        "correct the address of {ref} to {address}",
        "forward {ref} to {address}",
        "amend the address on {ref} to {address}",
        "change where {ref} is delivered",
        "update the address on {ref}",
        "switch the destination of {ref} to {address}",
        "modify the shipping address of {ref} to {address}",
        "move the delivery of {ref} to {address}",
        "change the address for {ref}",
    ),
    "general_question": (
        "know your opening hours",
        "know if you ship to {country}",
        "ask if the {product} is in stock",
        "find out how long shipping to {city} takes",
        "know which payment methods you accept",
        "ask about gift wrapping",
        "know your return policy",
        "ask about a student discount",
        "know if you have a shop in {city}",
        "know what express delivery costs",
        "ask whether you sell gift cards",
        "know if the {product} has a warranty",
        "reset my account password",
        "get an invoice for {ref}",
        "add a gift note to {ref}",
        "know if you price match",
        "ask if you deliver to PO boxes",
        "know the size of the {product}",
        "ask if you are open on weekends",
        "talk to a human agent",
        "pay with PayPal",
        "ask about next-day delivery",
        "know if the {product} comes in other colours",
        "ask about your shipping costs to {country}",
        "subscribe to your newsletter",
        "know if you sell refurbished items",
        "order by phone",
        "know if prices include VAT",
    ),
}
LEXICON_SHARE = 0.5
"""Share of training requests written from the lexicon rather than a literal template."""

_ORDER_REFS = (
    "order {order_id}",
    "my order {order_id}",
    "{order_id}",
    "order number {order_id}",
    "order #{order_id}",
    "the order {order_id}",
    "my order ({order_id})",
    "order no. {order_id}",
    "purchase {order_id}",
    "my purchase {order_id}",
    "my package {order_id}",
    "the parcel for {order_id}",
    "order ref {order_id}",
    "order ID {order_id}",
)
_EMAIL_REFS = (
    "my order (I used {email})",
    "the order I placed with {email}",
    "my last order under {email}",
    "my order, account {email}",
    "the order on account {email}",
    "my order from {email}",
    "my recent order (email {email})",
    "the purchase made with {email}",
    "my order placed under {email}",
    "my order, email {email}",
    "the order for {email}",
    "my package ({email})",
    "my order registered to {email}",
    "the order linked to {email}",
)
_BARE_REFS = (
    "my order",
    "my package",
    "the order",
    "my purchase",
    "my parcel",
    "my recent order",
    "the thing I ordered",
    "my last order",
    "my delivery",
    "the order I placed",
    "my shipment",
    "my stuff",
    "the item I bought",
    "what I ordered",
)
_OPENERS = (
    "Hi,",
    "Hello,",
    "Hey there,",
    "Good morning,",
    "Dear support team,",
    "Hi support,",
    "Hallo,",
    "Good afternoon,",
    "Hey,",
    "Greetings,",
    "Dear Sir or Madam,",
    "Hi team,",
    "Bonjour,",
    "Hello there!",
    "Hi folks,",
    "To whom it may concern,",
    "Good evening,",
    "Hola,",
    "Hiya,",
    "Dear customer service,",
    "Morning,",
)
_INTRODUCTIONS = (
    "This is {name}.",
    "My name is {name}.",
    "{name} here.",
    "I'm {name}.",
    "It's {name}.",
    "{name} writing.",
    "I am {name}.",
    "My name's {name}.",
    "This is {name} writing.",
    "Name: {name}.",
    "{name} speaking.",
    "Hello from {name}.",
    "You are talking to {name}.",
    "I'm a customer, {name}.",
)
_SIGNATURES = (
    "Thanks, {name}",
    "Best, {name}",
    "Regards, {name}",
    "- {name}",
    "Cheers, {name}",
    "Kind regards,\n{name}",
    "Thank you, {name}",
    "Best wishes, {name}",
    "Many thanks, {name}",
    "Sincerely, {name}",
    "Greetings, {name}",
    "Warm regards, {name}",
    "Thanks!\n{name}",
    "Yours, {name}",
    "Talk soon, {name}",
    "All the best, {name}",
)
_CLOSERS = (
    "Thanks!",
    "Thank you.",
    "Cheers.",
    "Appreciate it.",
    "Thanks in advance.",
    "Thank you very much.",
    "Have a nice day.",
    "Many thanks.",
    "I appreciate your help.",
    "Looking forward to your reply.",
    "Thx.",
    "Hope to hear from you soon.",
    "Thanks a lot.",
    "Merci.",
)
_CONTEXTS: Mapping[str, tuple[str, ...]] = {
    "order_id": (
        "My order number is {order_id}.",
        "Order: {order_id}.",
        "The order is {order_id}.",
        "Ref {order_id}.",
        "It's order {order_id}.",
        "The order ID is {order_id}.",
        "Order no. {order_id}.",
        "For reference: {order_id}.",
        "That's order {order_id}.",
        "It was order {order_id}.",
        "Reference number {order_id}.",
        "My order ID: {order_id}.",
        "This is about {order_id}.",
        "Order reference {order_id}.",
    ),
    "email": (
        "My email is {email}.",
        "I ordered with {email}.",
        "Account: {email}",
        "You can find me under {email}.",
        "Email: {email}.",
        "My account email is {email}.",
        "I used the address {email}.",
        "Reach me at {email}.",
        "Registered email: {email}.",
        "The account is {email}.",
        "I signed up as {email}.",
        "Contact: {email}",
        "It's under {email}.",
        "My login is {email}.",
    ),
    "product": (
        "It's the {product}.",
        "The item is the {product}.",
        "I bought the {product}.",
        "This is about the {product}.",
        "Product: {product}.",
        "I ordered a {product}.",
        "It was a {product}.",
        "The order was for the {product}.",
        "Item: {product}.",
        "I got the {product}.",
        "It concerns the {product}.",
        "It's for a {product}.",
        "The product is the {product}.",
        "I purchased the {product}.",
    ),
    "amount": (
        "I paid {amount}.",
        "It cost {amount}.",
        "The total was {amount}.",
        "I was charged {amount}.",
        "It came to {amount}.",
        "The price was {amount}.",
        "Total: {amount}.",
        "I spent {amount} on it.",
        "That was {amount}.",
        "My card was billed {amount}.",
        "Amount paid: {amount}.",
        "It was {amount} in total.",
        "The bill said {amount}.",
        "I paid {amount} for it.",
    ),
    "date": (
        "I ordered it on {date}.",
        "Order date: {date}.",
        "I placed it on {date}.",
        "It was bought on {date}.",
        "I ordered on {date}.",
        "Placed on {date}.",
        "I bought it on {date}.",
        "The order is from {date}.",
        "It was ordered on {date}.",
        "Date of order: {date}.",
        "I purchased it on {date}.",
        "Ordered {date}.",
        "I made the order on {date}.",
        "It's from {date}.",
    ),
    "reason": (
        "The reason is that {reason}.",
        "Reason: {reason}.",
        "It's because {reason}.",
        "Basically {reason}.",
        "The problem is {reason}.",
        "Sadly {reason}.",
        "Why: {reason}.",
        "Unfortunately {reason}.",
        "The issue: {reason}.",
        "I'm asking because {reason}.",
        "To explain, {reason}.",
        "Long story short, {reason}.",
        "The thing is, {reason}.",
        "Note: {reason}.",
    ),
}
_MONEY_FORMATS = (
    "${amount}",
    "{amount} EUR",
    "€{amount}",
    "£{amount}",
    "{amount} USD",
    "{amount}",
    "{amount} euros",
    "CHF {amount}",
    "{amount} dollars",
    "EUR {amount}",
    "{amount} GBP",
    "{amount}€",
    "USD {amount}",
    "{amount} CAD",
)

# Real customer phrasing (``compose(..., realistic=True)``, the classifier's and the
# extractor's data): what customers write that the tidy templates above lack. Indirect
# requests, questions *about* an action (a lookup, so order_status), stories before the
# request, a side question after it, sloppy writing, sign-offs with names, greetings in
# another language, amounts and emails in odd places. Every list is split like the others.
REALISTIC_SHARE = 0.5
"""Share of a realistic stream's messages written in the real-phrasing style."""
REALISTIC_MAX_CHARS = 440

_REAL_CORES: Mapping[str, tuple[str, ...]] = {
    "order_status": (
        "I cancelled {ref} yesterday, can you check it actually went through?",
        "Has my refund for {ref} been processed yet?",
        "Did my address change for {ref} get saved?",
        "I asked for {ref} to be cancelled last week. Is it cancelled now or not?",
        "is {ref} still on or did the cancellation work",
        "Just checking the refund on {ref} was approved?",
        "I updated the delivery address on {ref}, is the new one showing on your side?",
        "quick one: what's the current state of {ref}",
        "did {ref} even go through? my bank shows nothing",
        "can u look at {ref} and tell me if it's all ok",
        "Was the cancellation of {ref} confirmed? I never got an email about it.",
        "My refund request for {ref}, was it accepted?",
        "So is {ref} placed or not??",
        "I'm not sure {ref} was paid, could you have a look at it?",
        "Could you tell me whether the refund on {ref} is done?",
        "Status on {ref}?",
        "Can you see if the new address I gave for {ref} was applied?",
        "I got two confirmation mails for {ref}, which one is right?",
        "what's happening with {ref}, is it still processing",
        "Did you receive my cancellation for {ref}? Just want to be sure it's stopped.",
        "Has the money for {ref} been sent back to me already?",
    ),
    "track_shipment": (
        "tracking no for {ref} pls",
        "Has it been delivered or not? It's {ref}.",
        "re: {ref} / {product} / {carrier}??",
        "{carrier} says nothing about {ref}, where is it?",
        "any idea when {ref} turns up",
        "The {product} from {ref} still isn't here.",
        "When is {ref} getting here? I need it by the weekend.",
        "can you send me the tracking link for {ref}",
        "still no sign of {ref}...",
        "Where's my {product}?? It's {ref}.",
        "Is {ref} with {carrier} yet?",
        "{ref} shows delivered but nothing came, where did it go?",
        "wheres {ref}",
        "Could someone check where {ref} is stuck?",
        "How many more days for {ref}?",
        "Tracking says {ref} is in transit for a week now, what's going on?",
        "Do you have a tracking number for the {product}? ({ref})",
        "Is {ref} coming today or tomorrow?",
        "My {product} ({ref}) hasn't arrived, can you trace it?",
        "need the delivery date for {ref}",
        "has {ref} left your warehouse already",
    ),
    "cancel_order": (
        "kindly stop {ref}",
        "I don't want {ref} anymore, please don't ship it.",
        "pls cancel {ref} asap",
        "Can you make sure {ref} never ships? {reason_sentence}",
        "I'd rather not go ahead with {ref}, please cancel.",
        "don't send {ref}, {reason}",
        "Please stop {ref} before it leaves, {reason}.",
        "I need to back out of {ref}.",
        "Cancel the {product} on {ref} please.",
        "{ref} - please cancel, {reason}",
        "Is there any way to still stop {ref}? I want it cancelled.",
        "I want out of {ref}, cancel it please",
        "please don't process {ref}, I changed my mind about it",
        "I placed {ref} by accident, can you kill it?",
        "Cancel it please, it's {ref}.",
        "Please call {ref} off, {reason}.",
        "I no longer need the {product}, please cancel {ref}.",
        "stop the order {ref} please!!",
        "Can {ref} be stopped and cancelled today?",
        "I would like {ref} to be cancelled, {reason}.",
        "{reason_sentence} So please cancel {ref}.",
    ),
    "refund_request": (
        "could I get {amount} back for {ref}?",
        "I want the full {amount} back for {ref}.",
        "I'd like my {amount} back, it's {ref}.",
        "Please send the money for {ref} back to my card, {reason}.",
        "{reason_sentence} I want my money back for {ref}.",
        "can i get refunded for {ref} pls",
        "I expect {amount} back on {ref}.",
        "Where do I get my money back? {ref}, {reason}.",
        "I'm returning the {product} from {ref}, I want a refund.",
        "refund {ref} please, {reason}",
        "Please pay me back the {amount} for {ref}.",
        "I should get {amount} back for {ref} since {reason}.",
        "Can you give me back what I paid for {ref}?",
        "I'd like a refund on the {product} ({ref}).",
        "Please put {amount} back on my card for {ref}.",
        "i want my money back for {ref} {reason}",
        "Can I get a refund on {ref}? I paid {amount} and {reason}.",
        "Refund the {product} please, {ref}.",
        "I would like to be refunded {amount} for {ref}.",
        "Please return the {amount} I was charged for {ref}.",
        "Money back on {ref} please, {reason}.",
    ),
    "change_address": (
        "the {product} on {ref} should go to {address}",
        "deliver {ref} to {address} instead",
        "pls send {ref} to {address}, not the old adress",
        "Can {ref} go to {address}? I won't be home at the old one.",
        "I gave the wrong address for {ref}. The right one is {address}.",
        "new adress for {ref}: {address}",
        "Please ship the {product} from {ref} to {address}.",
        "{ref} needs to go to {address} now.",
        "Could {ref} be delivered to {address} rather than my home?",
        "I moved last month, so {ref} has to go to {address}.",
        "please chnage the address on {ref} to {address}",
        "Send it to {address} instead please, it's {ref}.",
        "I'm at {address} now, can {ref} come there?",
        "Change of address for {ref} -> {address}",
        "Please have the courier bring {ref} to {address}.",
        "{ref}: new delivery address is {address}",
        "Can you update {ref} to deliver to {address}?",
        "The address on {ref} is old, use {address} please.",
        "I'd like {ref} to be shipped to {address} instead.",
        "Can you redirect the parcel for {ref} to {address}?",
        "Make {ref} go to {address} please, thanks",
    ),
    "general_question": (
        "do u ship to {country}??",
        "how long does delivery to {city} take",
        "Is the {product} any good for travel?",
        "Can I pay by bank transfer?",
        "what's your returns policy",
        "Do you still sell the {product}?",
        "Is there a discount if I buy two?",
        "Are there any sales coming up?",
        "can i change my account email",
        "Does the {product} come with batteries?",
        "Do you ship on Saturdays?",
        "How do I contact you by phone?",
        "do you do gift wrap",
        "Is shipping free over a certain amount?",
        "What colours does the {product} come in?",
        "Can I collect in store in {city}?",
        "how do i delete my account",
        "Do you have a newsletter with discount codes?",
        "Is the {product} suitable for kids?",
        "Do you deliver to {country} and how much is it?",
        "Where can I find the size guide?",
    ),
}
_STORIES = (
    "I ordered this as a birthday present for my sister.",
    "I've been a customer for years and this has never happened before.",
    "We're moving flats next week and everything is a bit chaotic.",
    "My partner placed the order on my account while I was away.",
    "I'm travelling for work until the end of the month.",
    "I tried calling but nobody picked up, so I'm writing instead.",
    "I already wrote to you twice and got no answer.",
    "A friend recommended your shop and this was my first order.",
    "The chat on your website kept disconnecting.",
    "I'm writing on behalf of my elderly father who doesn't use email.",
    "I needed this for a trip and time is running out.",
    "So I ordered last week and was really looking forward to it.",
    "Sorry for the long message, it's been a frustrating week.",
    "I've checked my account page and the spam folder already.",
    "It was meant to be a surprise, so I'd like this sorted quietly.",
    "I live in a shared building and parcels sometimes go missing.",
    "My neighbour usually takes in deliveries for me.",
    "I'm not very good with computers, sorry.",
    "This is the second time I'm ordering from you.",
    "I bought a few things from you this month.",
    "I hope you can help me with this.",
)
_ALSO = (
    "Also, do you sell gift cards?",
    "And do you have a store I can visit?",
    "btw can I pay with Klarna next time?",
    "Also how long does your warranty last?",
    "Oh and is there a student discount?",
    "Also, what are your opening hours?",
    "PS: do you ship to Norway?",
    "And can I get the invoice by email?",
    "Also, is the newsletter discount still valid?",
    "One more thing, do you price match?",
    "Also can you tell me if you restock soon?",
    "And what payment methods do you take?",
    "P.S. your website is a bit slow today.",
    "Also: do you deliver on Sundays?",
)
_REAL_OPENERS = (
    "Hola :)",
    "Bonjour!",
    "Servus,",
    "Ciao,",
    "Hallo zusammen,",
    "Hej,",
    "Olá,",
    "Buongiorno,",
    "Salut,",
    "Moin,",
    "Dzień dobry,",
    "Goedemorgen,",
    "Grüezi,",
    "Hola!",
    "Bonjour :)",
    "hi",
    "hello??",
    "Hi there,",
    "hey guys",
    "Good day,",
    "Dear all,",
)
_REAL_SIGNATURES = (
    "Best,\n{name}",
    "Thanks a lot,\n{name}",
    "— {name}",
    "{name}\nSent from my phone",
    "thx {name}",
    "Thank you!\n{name}",
    "Cheers\n{name}",
    "Kind regards\n{name}",
    "Best regards,\n{name}",
    "Thanks so much, {name}",
    "ty, {name}",
    "Regards\n{name}",
    "Many thanks,\n{name}",
    "-- {name}",
    "Greetings,\n{name}",
    "Thanks again\n{name}",
    "Mit freundlichen Grüßen, {name}",
    "Cordialement, {name}",
    "Saludos, {name}",
    "Bye, {name}",
    "Thank you in advance,\n{name}",
)
_REAL_CONTEXTS: Mapping[str, tuple[str, ...]] = {
    "order_id": (
        "(order {order_id})",
        "order nr: {order_id}",
        "Order #: {order_id}",
        "it's {order_id} btw",
        "ref: {order_id}",
        "the number is {order_id}",
        "[{order_id}]",
        "order id = {order_id}",
        "{order_id} is the order",
        "Order {order_id}",
        "My order: {order_id}",
        "orderd as {order_id}",
        "(ref {order_id})",
        "order no {order_id}",
    ),
    "email": (
        "(my email is {email})",
        "email: {email}",
        "my account is under {email} btw",
        "you can reach me on {email}",
        "{email} is my account email",
        "account email -> {email}",
        "(account: {email})",
        "I'm registered as {email}",
        "email address {email}",
        "Reply to {email} please",
        "login {email}",
        "Contact email: {email}",
        "mail: {email}",
        "my mail is {email}",
    ),
    "amount": (
        "(I paid {amount})",
        "paid: {amount}",
        "the total was {amount} btw",
        "charged {amount}",
        "cost me {amount}",
        "amount: {amount}",
        "({amount} in total)",
        "I paid {amount} for this",
        "it was {amount}",
        "price paid {amount}",
        "Total charged: {amount}",
        "that's {amount} I paid",
        "(it was {amount})",
        "paid {amount} for it",
    ),
    "product": (
        "it's the {product}",
        "(the {product})",
        "item: {product}",
        "the {product} I got",
        "product - {product}",
        "About the {product}.",
        "I orderd the {product}",
        "the one with the {product}",
        "It's for the {product}.",
        "{product} is the item",
        "re the {product}",
        "the {product} one",
        "Item = {product}",
        "it was a {product}",
    ),
}
_REAL_MONEY_FORMATS = (
    "US${amount}",
    "$ {amount}",
    "{amount}$",
    "€ {amount}",
    "{amount} eur",
    "£ {amount}",
    "{amount} bucks",
    "{amount}£",
    "{amount} usd",
    "{amount} €",
    "C${amount}",
    "{amount} Euro",
    "{amount} pounds",
    "EUR{amount}",
)
_AMOUNT_WORDS = (
    "fifty euros",
    "twenty bucks",
    "a hundred dollars",
    "thirty pounds",
    "forty quid",
    "ninety euros",
    "fifteen dollars",
    "sixty euros",
    "twelve pounds",
    "seventy dollars",
    "eighty quid",
    "two hundred euros",
    "twenty-five dollars",
    "thirty-five euros",
)
"""Amounts written in words: not a number the schema can hold, so ``amount`` stays null."""
AMOUNT_IN_WORDS = 0.1
_TYPOS = (
    "cancel>cancle",
    "address>adress",
    "change>chnage",
    "please>plz",
    "received>recieved",
    "ordered>orderd",
    "please>pls",
    "refund>refnd",
    "delivered>deliverd",
    "package>pakage",
    "tracking>traking",
    "shipping>shiping",
    "order>oder",
    "you>u",
    "your>ur",
    "thanks>thx",
    "because>bc",
    "address>addres",
    "cancel>cancell",
    "delivery>delievery",
    "status>staus",
    "cancelled>canceled",
    "receive>recieve",
    "refund>refound",
    "arrived>arived",
    "where>were",
    "already>allready",
    "money>mony",
)
"""Sloppy spellings, ``word>typo``; each is a template of its own, split like the others."""

# Per intent: probability of an order id, else of an email (the rest give neither), and of
# each optional fact.
_REF_ODDS: Mapping[str, tuple[float, float]] = {
    "order_status": (0.6, 0.3),
    "track_shipment": (0.65, 0.25),
    "cancel_order": (0.7, 0.2),
    "refund_request": (0.7, 0.2),
    "change_address": (0.75, 0.15),
    "general_question": (0.15, 0.1),
}
_FACT_ODDS: Mapping[str, Mapping[str, float]] = {
    "order_status": {"product": 0.3, "date": 0.25, "amount": 0.1},
    "track_shipment": {"product": 0.3, "date": 0.25, "amount": 0.05},
    "cancel_order": {"product": 0.3, "date": 0.15, "amount": 0.1, "reason": 0.6},
    "refund_request": {"product": 0.3, "date": 0.15, "amount": 0.65, "reason": 0.65},
    "change_address": {"product": 0.2, "date": 0.1, "address": 0.85},
    "general_question": {"product": 0.3, "date": 0.05},
}
_NAME_ODDS = 0.5


@dataclass(frozen=True)
class Message:
    """A customer message and what a perfect classifier and extractor would return."""

    text: str
    intent: str
    fields: Mapping[str, str | None]
    templates: frozenset[str]
    entities: Mapping[str, frozenset[str]]


def held_out(position: int) -> Split:
    """Which split a template at this position in its list belongs to."""
    if position % 7 == 3:
        return "validation"
    if position % 7 == 6:
        return "test"
    return "train"


@cache
def templates_of(group: str, split: Split) -> tuple[str, ...]:
    """The templates of one list (``core:<intent>``, ``context:<field>``, ``opener``...)."""
    return tuple(t for i, t in enumerate(_GROUPS[group]) if held_out(i) == split)


def all_template_groups() -> tuple[str, ...]:
    """Every template list's name."""
    return tuple(_GROUPS)


def compose(
    rng: Random,
    split: Split,
    *,
    invented: float = 0.0,
    intent: str | None = None,
    realistic: bool = False,
) -> Message:
    """One message of ``split``; ``intent`` is drawn uniformly when not given.

    ``invented`` is the share of made-up entity values (train only, see
    :class:`~mesh.train.data.entities.Entities`). ``realistic`` writes
    :data:`REALISTIC_SHARE` of the messages in real customers' style (the real-phrasing
    lists: indirect requests, stories, typos, sign-offs); without it the draws are those of
    the tidy generator alone.
    """
    for _ in range(100):
        entities = Entities(split, rng, invented=invented)
        real = realistic and rng.random() < REALISTIC_SHARE
        message = _compose_once(rng, entities, intent or rng.choice(INTENTS), real=real)
        limit = REALISTIC_MAX_CHARS if real else MAX_MESSAGE_CHARS
        if len(message.text) <= limit and _states_every_field(message):
            return message
    raise RuntimeError("could not compose a message short enough")


def _compose_once(rng: Random, entities: Entities, intent: str, *, real: bool = False) -> Message:
    split = entities.split
    used_templates: list[str] = []
    rough = _Roughness(rng, split, used_templates) if real else None

    def pick(group: str, *, tidy: bool = False) -> str:
        template = rng.choice(templates_of(group, split))
        used_templates.append(template)
        return template if rough is None or tidy else rough(template)

    def either(group: str, real_group: str, odds: float = 0.5) -> str:
        return pick(real_group if real and rng.random() < odds else group)

    if real and rng.random() < 0.6:
        core = pick(f"real:{intent}")
    elif split == "train" and rng.random() < LEXICON_SHARE:
        core = _lexicon_request(rng, intent)
        used_templates.append(core)
        core = rough(core) if rough else core
    else:
        core = pick(f"core:{intent}")
    core_slots = _slots(core)
    facts = _draw_facts(rng, entities, intent, required=core_slots)
    in_words = bool(real and facts["amount"] and rng.random() < AMOUNT_IN_WORDS)
    if in_words:
        money = pick("amount_words", tidy=True)
    elif facts["amount"]:
        money = either("money", "real:money").format(amount=facts["amount"])
    else:
        money = ""
    ref = _reference(rng, facts, core_slots, split, used_templates, rough)
    values = {
        "ref": ref,
        "amount": money,
        "address": facts["address"] or "",
        "reason": facts["reason"] or "",
        "product": facts["product"] or "",
        "city": entities.city() if "city" in core_slots else "",
        "country": entities.country() if "country" in core_slots else "",
        "carrier": entities.carrier() if "carrier" in core_slots else "",
        "reason_sentence": "",
    }
    stated = set(core_slots) | _ref_fields(ref, facts)
    if "reason_sentence" in core_slots and facts["reason"]:
        values["reason_sentence"] = pick("context:reason").format(reason=facts["reason"])
        stated.add("reason")
    sentence = core.format(**values).strip()
    sentences = [sentence]
    extra = [
        name
        for name in ("order_id", "email", "product", "amount", "date", "reason")
        if facts[name] and name not in stated
    ]
    rng.shuffle(extra)
    for name in extra:
        value = money if name == "amount" else facts[name]
        group = f"context:{name}"
        if real and name in _REAL_CONTEXTS and rng.random() < 0.5:
            group = f"real:context:{name}"
        # Real customers also give the facts before the request (which then comes last).
        at = rng.randint(0 if real else 1, len(sentences))
        sentences.insert(at, pick(group).format(**{name: value}))
    if real and rng.random() < 0.2:
        sentences.append(pick("also"))
    if real and rng.random() < 0.35:
        for _ in range(rng.choice((1, 1, 2))):
            sentences.insert(0, pick("story"))
    if facts["name"] and rng.random() < 0.5:
        sentences.insert(0, pick("introduction").format(name=facts["name"]))
        if rng.random() < 0.5:
            sentences.append(pick("closer"))
    elif facts["name"]:
        if rng.random() < 0.5:
            sentences.append(pick("closer"))
        signature = either("signature", "real:signature", 0.6)
        sentences.append(signature.format(name=facts["name"]))
    elif rng.random() < 0.5:
        sentences.append(pick("closer"))
    if rng.random() < (0.75 if real else 0.6):
        sentences.insert(0, either("opener", "real:opener"))
    fields = dict(facts, amount=None) if in_words else facts
    return Message(
        text=_join(rng, sentences, newlines=0.25 if real else 0.08),
        intent=intent,
        fields=fields,
        templates=frozenset(used_templates),
        entities={kind: frozenset(found) for kind, found in entities.used.items()},
    )


_SLOT = re.compile(r"(\{[^{}]*\})")


class _Roughness:
    """How sloppily one realistic message is written: typos (from the split's own list),
    all lowercase, punctuation dropped, doubled question marks. Only the template text
    changes, never a slot, so every entity value stays exactly as drawn."""

    def __init__(self, rng: Random, split: Split, used: list[str]) -> None:
        self.rng = rng
        self.used = used
        self.typo_rate = rng.choice((0.0, 0.0, 0.3, 0.6, 1.0))
        self.typos = templates_of("typo", split)
        self.lower = rng.random() < 0.3
        self.bare = rng.random() < 0.25
        self.doubled = rng.random() < 0.3

    def __call__(self, template: str) -> str:
        return "".join(
            part if _SLOT.fullmatch(part) else self._text(part) for part in _SLOT.split(template)
        )

    def _text(self, text: str) -> str:
        rng = self.rng
        if self.typo_rate:
            for entry in self.typos:
                word, typo = entry.split(">")
                pattern = re.compile(rf"\b{word}\b", re.IGNORECASE)
                if pattern.search(text) and rng.random() < self.typo_rate:
                    self.used.append(entry)
                    text = pattern.sub(partial(_typo_in_case, typo), text)
        if self.lower:
            text = text.lower()
        if self.bare:
            text = re.sub(r"[.,;!](?=\s|$)", "", text)
        if self.doubled:
            text = text.replace("?", rng.choice(("??", "???", "?!")))
        return text


def _like_case(word: str, typo: str) -> str:
    return typo[:1].upper() + typo[1:] if word[:1].isupper() else typo


def _typo_in_case(typo: str, match: re.Match[str]) -> str:
    """``typo`` in the letter case of the word it replaces (a ``re.sub`` replacement)."""
    return _like_case(match.group(0), typo)


def _lexicon_request(rng: Random, intent: str) -> str:
    """A request sentence from the lexicon that is none of the held-out templates."""
    held = _held_out_cores()
    while True:
        action = rng.choice(_ACTIONS[intent])
        sentence = rng.choice(_FRAMES).format(action=action)
        if sentence not in held:
            return sentence


@cache
def _held_out_cores() -> frozenset[str]:
    return frozenset(
        template
        for intent in INTENTS
        for split in ("validation", "test")
        for template in templates_of(f"core:{intent}", split)
    )


def _draw_facts(
    rng: Random, entities: Entities, intent: str, *, required: Sequence[str]
) -> dict[str, str | None]:
    """The values the message will state (at least those the core template needs)."""
    facts: dict[str, str | None] = dict.fromkeys(FIELDS)
    order_odds, email_odds = _REF_ODDS[intent]
    roll = rng.random()
    if roll < order_odds:
        facts["order_id"] = entities.order_id()
    wants_email = order_odds <= roll < order_odds + email_odds or rng.random() < 0.08
    if rng.random() < _NAME_ODDS:
        facts["name"] = entities.full_name() if rng.random() < 0.6 else entities.first_name()
    if wants_email:
        facts["email"] = entities.email(facts["name"] if rng.random() < 0.7 else None)
    draw = {
        "product": entities.product,
        "date": entities.date,
        "amount": entities.amount,
        "address": entities.address,
        "reason": entities.reason,
    }
    for name, odds in _FACT_ODDS[intent].items():
        if rng.random() < odds:
            facts[name] = draw[name]()
    for name in set(required) & set(draw):
        facts[name] = facts[name] or draw[name]()
    return facts


def _states_every_field(message: Message) -> bool:
    return all(value is None or value in message.text for value in message.fields.values())


def _reference(
    rng: Random,
    facts: Mapping[str, str | None],
    core_slots: Sequence[str],
    split: Split,
    used: list[str],
    rough: Callable[[str], str] | None = None,
) -> str:
    if "ref" not in core_slots:
        return ""
    if facts["order_id"] and rng.random() < 0.8:
        group, value = "ref:order", {"order_id": facts["order_id"]}
    elif facts["email"] and not facts["order_id"] and rng.random() < 0.6:
        group, value = "ref:email", {"email": facts["email"]}
    else:
        group, value = "ref:bare", {}
    template = rng.choice(templates_of(group, split))
    used.append(template)
    return (rough(template) if rough else template).format(**value)


def _ref_fields(ref: str, facts: Mapping[str, str | None]) -> set[str]:
    return {name for name in ("order_id", "email") if (fact := facts[name]) and fact in ref}


def _slots(template: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(template) if name)


def _join(rng: Random, sentences: list[str], *, newlines: float = 0.08) -> str:
    text = ""
    for sentence in sentences:
        if not text:
            text = sentence
        else:
            text += ("\n" if rng.random() < newlines else " ") + sentence
    if rng.random() < 0.1:
        text = text.rstrip(".!")
    if rng.random() < 0.1:
        text = text[:1].lower() + text[1:]
    return text


_GROUPS: Mapping[str, tuple[str, ...]] = {
    **{f"core:{intent}": _CORES[intent] for intent in INTENTS},
    **{f"context:{name}": templates for name, templates in _CONTEXTS.items()},
    "ref:order": _ORDER_REFS,
    "ref:email": _EMAIL_REFS,
    "ref:bare": _BARE_REFS,
    "opener": _OPENERS,
    "introduction": _INTRODUCTIONS,
    "signature": _SIGNATURES,
    "closer": _CLOSERS,
    "money": _MONEY_FORMATS,
    **{f"real:{intent}": _REAL_CORES[intent] for intent in INTENTS},
    **{f"real:context:{name}": templates for name, templates in _REAL_CONTEXTS.items()},
    "real:opener": _REAL_OPENERS,
    "real:signature": _REAL_SIGNATURES,
    "real:money": _REAL_MONEY_FORMATS,
    "story": _STORIES,
    "also": _ALSO,
    "amount_words": _AMOUNT_WORDS,
    "typo": _TYPOS,
}
