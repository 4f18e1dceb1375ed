"""Applying calls to Postgres, one module per call type.

identify.py   identify: standard traits (workers/traits.py), context (workers/context.py),
              custom user attributes
page.py       page and screen: counters, first/last seen, page views
track.py      track: event occurrences with typed properties
group.py      group: companies and memberships
alias.py      alias: previousId and userId become one profile
resolve.py    which profile a call applies to (userId, anonymousId, links, merges)
attributes.py definitions, auto-definition and caps; coercion itself is workers/coerce.py
state.py      the in-memory unit of work these functions change
store.py      loading that state and writing it back (the only SQL)
messages.py   queued messages (a lone one is a group of one): dedupe, load, apply each call in
              order, flush; isolating what fails
deadletters.py  calls kept as dead letters, and their keys
"""
